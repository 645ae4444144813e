"""The whole vocabulary a chat turn speaks: what `run_turn` yields and the SSE encoder sends."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens as the provider bills them; `reasoning_tokens` (part of `completion_tokens`) is
    None unless the provider reported it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None
    estimated: bool = False  # counted here with a tokenizer: the provider reported none

    def __add__(self, other: Usage) -> Usage:
        reasoning = (
            None
            if self.reasoning_tokens is None and other.reasoning_tokens is None
            else (self.reasoning_tokens or 0) + (other.reasoning_tokens or 0)
        )
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            reasoning,
            self.estimated or other.estimated,
        )


@dataclass(frozen=True, slots=True)
class Started:
    session: str
    model: str
    simulated: bool = False  # the in-process simulated model answers, not a real one
    turn: str = ""  # the turn's id (DESIGN §4 `started.turn`)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning, streamed before (or between) its reply: not content."""

    text: str


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    id: str
    name: str
    ok: bool
    output: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Failed:
    message: str


Event = Started | Reasoning | Token | ToolCallStarted | ToolResult | Done | Failed
