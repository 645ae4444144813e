"""The model port: a streaming chat model in provider-neutral types.

Adapters (`core.model.openai`, `core.model.simulated`) turn their provider's wire format into
these events; nothing past this port knows a provider's JSON."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from core.events import Reasoning, Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall, ToolSpec


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's step ended; tool calls are whole here, arguments assembled."""

    finish_reason: str
    usage: Usage | None = field(default_factory=Usage)  # None: the provider reported none
    tool_calls: tuple[ToolCall, ...] = ()


# A model streams the turn's own events (text, reasoning, a tool call starting), then ends its
# step with a Completion, which only the turn sees.
ModelEvent = Token | Reasoning | ToolCallStarted | Completion


class ChatModel(Protocol):
    """A streaming chat model. Failures raise `core.errors.UpstreamError` subclasses."""

    @property
    def name(self) -> str: ...

    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        deadline: float | None = None,
    ) -> AsyncGenerator[ModelEvent, None]:
        """Stream one model step; ends with exactly one `Completion`.

        `deadline` is a `time.monotonic()` instant: no wait may run past it (`UpstreamTimeout`).
        """
        ...


def is_simulated(model: object) -> bool:
    """True for a stand-in that is no real model (it sets `simulated = True`): clients are told."""
    return getattr(model, "simulated", False) is True
