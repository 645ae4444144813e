"""The OpenAI adapter without sockets: the chunk assembler fed chunk by chunk, and the retry
policy against `httpx.MockTransport` answers (statuses, Retry-After, drops)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core.errors import (
    ContextTooLong,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from core.events import Reasoning, Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall
from core.model.openai import ChunkAssembler, OpenAIChatModel
from core.model.port import Completion, ModelEvent
from core.redaction import Redactor
from tests.fakes import openai_model_over


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return json.dumps({"choices": [choice], **extra})


def fragment(index: int, *, id: str = "", name: str = "", arguments: str = "") -> str:
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v}
    part: dict[str, Any] = {"index": index, "function": function}
    if id:
        part["id"] = id
    return chunk({"tool_calls": [part]})


def feed_all(assembler: ChunkAssembler, *datas: str) -> list[ModelEvent]:
    return [event for data in datas for event in assembler.feed(data)]


# ---- the chunk assembler -------------------------------------------------------------------


def test_text_and_reasoning_come_out_in_order_and_the_step_completes() -> None:
    assembler = ChunkAssembler(Redactor())
    events = feed_all(
        assembler,
        chunk({"role": "assistant"}),
        chunk({"reasoning_content": "hm"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}, finish="stop"),
        json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    )
    assert events == [Reasoning("hm"), Token("Hel"), Token("lo")]
    assert assembler.completion() == Completion(
        finish_reason="stop", usage=Usage(3, 2), tool_calls=()
    )


def test_interleaved_tool_call_fragments_are_assembled_by_index() -> None:
    assembler = ChunkAssembler(Redactor())
    events = feed_all(
        assembler,
        fragment(1, id="b", name="get_current_time", arguments='{"time'),
        fragment(0, id="a", name="calculator", arguments='{"expr'),
        fragment(1, arguments='zone": "UTC"}'),
        fragment(0, arguments='ession": "1+1"}'),
        chunk(finish="tool_calls"),
    )
    # Each call is announced once, at its first fragment.
    assert events == [
        ToolCallStarted(id="b", name="get_current_time"),
        ToolCallStarted(id="a", name="calculator"),
    ]
    assert assembler.completion().tool_calls == (
        ToolCall(id="a", name="calculator", arguments='{"expression": "1+1"}'),
        ToolCall(id="b", name="get_current_time", arguments='{"timezone": "UTC"}'),
    )


def test_a_step_without_a_finish_reason_is_not_complete() -> None:
    assembler = ChunkAssembler(Redactor())
    feed_all(assembler, chunk({"content": "cut"}))
    with pytest.raises(UpstreamProtocolError, match="without a finish reason"):
        assembler.completion()


@pytest.mark.parametrize(
    "data",
    ["not json", "[1, 2]", chunk({"content": 7}), json.dumps({"choices": [{"delta": "x"}]})],
)
def test_a_chunk_of_the_wrong_shape_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        feed_all(ChunkAssembler(Redactor()), data)


def test_an_error_chunk_is_the_providers_refusal_with_secrets_redacted() -> None:
    redactor = Redactor()
    redactor.add("sk-secret-value-123")
    error = {"error": {"message": "bad key sk-secret-value-123 here"}}
    with pytest.raises(UpstreamRejected) as caught:
        feed_all(ChunkAssembler(redactor), json.dumps(error))
    assert "sk-secret" not in str(caught.value)


def test_an_error_chunk_about_the_context_window_says_the_window() -> None:
    error = {"error": {"message": "This model's maximum context length is 8192 tokens."}}
    with pytest.raises(ContextTooLong) as caught:
        feed_all(ChunkAssembler(Redactor()), json.dumps(error))
    assert caught.value.window == 8192


# ---- the retry policy ----------------------------------------------------------------------

OK_BODY = (
    f"data: {chunk({'content': 'hi'})}\n\ndata: {chunk(finish='stop')}\n\ndata: [DONE]\n\n"
).encode()


class Answers:
    """The provider's answers in order, through `httpx.MockTransport`; counts the requests."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self._answers = list(answers)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self._answers.pop(0)(request)

    def model(self) -> OpenAIChatModel:
        return openai_model_over(self, max_retries=2, backoff_seconds=0.01)


def status(code: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(code, json={"error": {"message": "no"}}, headers=headers)


def stream(body: bytes = OK_BODY) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(
        200, content=body, headers={"content-type": "text/event-stream"}
    )


def drop(_: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("peer closed connection")


async def run(model: OpenAIChatModel) -> list[ModelEvent]:
    return [e async for e in model.stream([Message(role="user", content="hi")])]


async def test_a_429_with_retry_after_ms_is_retried_then_streams() -> None:
    answers = Answers(status(429, **{"retry-after-ms": "20"}), stream())
    events = await run(answers.model())
    assert events[0] == Token("hi") and isinstance(events[-1], Completion)
    assert answers.requests == 2


async def test_server_errors_are_retried_up_to_max_retries_then_reported() -> None:
    answers = Answers(status(503), status(502), status(500))
    with pytest.raises(UpstreamUnavailable, match="HTTP 500"):
        await run(answers.model())
    assert answers.requests == 3  # the first try and two retries


async def test_a_retry_after_longer_than_the_cap_fails_at_once() -> None:
    answers = Answers(status(429, **{"retry-after": "60"}))
    with pytest.raises(UpstreamRateLimited):
        await run(answers.model())
    assert answers.requests == 1


async def test_a_rejected_key_is_never_retried() -> None:
    answers = Answers(status(401))
    with pytest.raises(UpstreamAuthError):
        await run(answers.model())
    assert answers.requests == 1


async def test_a_drop_before_the_first_token_is_retried() -> None:
    answers = Answers(drop, stream())
    events = await run(answers.model())
    assert Token("hi") in events
    assert answers.requests == 2


async def test_a_stream_cut_after_a_token_is_not_retried() -> None:
    cut = f"data: {chunk({'content': 'partial'})}\n\n".encode()
    answers = Answers(stream(cut), stream())
    model = answers.model()
    seen: list[ModelEvent] = []
    with pytest.raises(UpstreamProtocolError, match="closed the stream"):
        async for event in model.stream([Message(role="user", content="hi")]):
            seen.append(event)
    assert seen == [Token("partial")]  # relayed once, never replayed
    assert answers.requests == 1
