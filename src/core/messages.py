"""Conversation messages as stored and replayed to the model (OpenAI chat roles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
Status = Literal["complete", "interrupted", "failed"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model asked for; `arguments` is the raw JSON text it streamed."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    status: Status = "complete"
    created_at: float = 0.0
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str = ""  # the model's reasoning before this (assistant) message, as streamed

    def to_openai(self, *, with_reasoning: bool = False) -> dict[str, Any]:
        """The message as the Chat Completions API takes it (no status, no time).

        `with_reasoning`: send the reasoning back as `reasoning_content` (DeepSeek's and
        vLLM's field), for providers that require it (see REASONING_HISTORY).
        """
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if with_reasoning and self.reasoning:
            out["reasoning_content"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
            if not self.content:
                out["content"] = None
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    def to_public(self) -> dict[str, Any]:
        """The message as `GET /sessions/{id}` shows it."""
        out: dict[str, Any] = {
            "role": self.role,
            "content": self.content,
            "status": self.status,
            "created_at": self.created_at,
        }
        if self.reasoning:
            out["reasoning"] = self.reasoning
        if self.tool_calls:
            out["tool_calls"] = [{"id": c.id, "name": c.name} for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
            out["name"] = self.name
        return out


@dataclass(frozen=True, slots=True)
class Session:
    """A session as loaded for a turn: its messages (oldest first) and the next free sequence."""

    id: str
    title: str
    created_at: float
    updated_at: float
    messages: tuple[Message, ...]
    next_seq: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a session for `GET /sessions/{id}`: `session.messages` oldest first, and
    `older`, the cursor (a sequence number) to pass as `before` for the page before it."""

    session: Session
    older: int | None
