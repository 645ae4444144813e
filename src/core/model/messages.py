"""The conversation's vocabulary, provider-neutral: messages as stored and replayed, the tool
calls a model made, and the tools it is told about. Adapters write their provider's JSON."""

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
class ToolSpec:
    """A tool as a model is told about it: its name, what it does, its arguments' JSON Schema."""

    name: str
    description: str
    parameters: dict[str, Any]


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
