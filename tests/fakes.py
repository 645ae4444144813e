"""Fakes for the core's ports: a scripted model (no sockets), and the OpenAI adapter over a
scripted transport."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from core.errors import UpstreamError
from core.events import Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall, ToolSpec
from core.model.openai import OpenAIChatModel, message_json
from core.model.port import Completion, ModelEvent


@dataclass
class Step:
    """One model step: text tokens, then tool calls (or a failure after `fail_after` tokens)."""

    tokens: Sequence[str] = ()
    tool_calls: Sequence[ToolCall] = ()
    fail_after: int | None = None
    error: UpstreamError | None = None
    delay: float = 0.0


@dataclass
class FakeModel:
    steps: list[Step]
    name: str = "fake-model"
    requests: list[list[dict[str, Any]]] = field(default_factory=list)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        deadline: float | None = None,
    ) -> AsyncGenerator[ModelEvent, None]:
        self.requests.append([message_json(m) for m in messages])
        step = self.steps.pop(0) if self.steps else Step(tokens=["ok"])
        for i, token in enumerate(step.tokens):
            if step.fail_after is not None and i >= step.fail_after:
                raise step.error or UpstreamError("fake failure")
            if step.delay:
                await anyio.sleep(step.delay)
            yield Token(token)
        for call in step.tool_calls:
            yield ToolCallStarted(id=call.id, name=call.name)
        yield Completion(
            finish_reason="tool_calls" if step.tool_calls else "stop",
            usage=Usage(10, len(step.tokens)),
            tool_calls=tuple(step.tool_calls),
        )


def openai_model_over(
    handler: Callable[[httpx.Request], httpx.Response], **options: Any
) -> OpenAIChatModel:
    """The real OpenAI adapter whose provider is `handler`, through `httpx.MockTransport`."""

    async def key() -> str:
        return "sk-test"

    settings: dict[str, Any] = {"model": "m", "max_tokens": 100} | options
    return OpenAIChatModel(
        client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        base_url="http://provider/v1",
        api_key=key,
        **settings,
    )
