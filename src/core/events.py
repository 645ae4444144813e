"""The whole vocabulary a chat turn speaks: what `run_turn` yields and the SSE encoder sends."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )


@dataclass(frozen=True, slots=True)
class Started:
    session: str
    model: str
    simulated: bool = False  # the in-process simulated model answers, not a real one


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


Event = Started | Token | ToolCallStarted | ToolResult | Done | Failed
