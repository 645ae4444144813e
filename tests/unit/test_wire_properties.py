"""Property tests (hypothesis) on the SSE encoder, the request model and the upstream parser.

Whatever text, tool output or JSON arrives, each either encodes/validates or fails with the
project's typed errors: never another exception, never a broken stream.
"""

from __future__ import annotations

import codecs
import itertools
import json
from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.sse import KEEPALIVE_COMMENT
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.chat.turn import check_prompt
from core.errors import (
    InvalidRequest,
    PromptTooLong,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejected,
)
from core.events import (
    Done,
    Event,
    Failed,
    Reasoning,
    Started,
    Token,
    ToolCallStarted,
    ToolResult,
    Usage,
)
from core.model.messages import Message
from core.model.openai import OpenAIChatModel
from core.model.port import Completion
from core.sessions.rules import is_valid_unicode
from handlers.errors import describe_validation
from handlers.routes import ChatBody
from handlers.sse import encode_data, payload, to_sse

# Text with the characters that break naive SSE encoders overweighted: line terminators SSE
# knows (CR, LF), ones it does not (U+2028/9, NEL, VT, FF), NUL, field-like prefixes, and
# lone surrogates (JSON may carry them as `\ud800`, so a model can send one).
TRICKY = ["\r", "\n", "\r\n", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x00", "\ufeff"]
TRICKY += ["data: x", "id: 9", ": ping", "event: e", "\ud800", "\udfff", "\ud83d", "🎉", '"', "\\"]
texts = st.lists(st.one_of(st.characters(), st.sampled_from(TRICKY)), max_size=16).map("".join)
counts = st.integers(min_value=0, max_value=2**31)

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(Started, session=texts, model=texts),
    st.builds(Token, text=texts),
    st.builds(ToolCallStarted, id=texts, name=texts),
    st.builds(ToolResult, id=texts, name=texts, ok=st.booleans(), output=texts),
    st.builds(Failed, message=texts),
    st.builds(Done, finish_reason=texts, usage=st.builds(Usage, counts, counts)),
)


def wire(event: Event, seq: int) -> bytes:
    """The bytes the app writes for one event."""
    return to_sse(event, str(seq))


def parse(body: bytes, cuts: Sequence[int]) -> list[tuple[str, str, str]]:
    """Decode like a client: bytes cut at arbitrary places, incremental UTF-8, httpx_sse."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, sse = SSELineDecoder(), SSEDecoder()
    parsed: list[tuple[str, str, str]] = []
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    for start, end in itertools.pairwise(bounds):
        for line in lines.decode(decoder.decode(body[start:end])) if end > start else []:
            event = sse.decode(line)
            # httpx_sse dispatches an empty event for a comment block once an id was seen;
            # the SSE spec (and EventSource) dispatches nothing for an empty data buffer.
            if event is not None and event.data:
                parsed.append((event.event, event.data, event.id))
    assert decoder.decode(b"", final=True) == ""
    assert lines.flush() == []
    return parsed


@given(st.lists(events, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_events_round_trip_through_an_sse_parser(
    sequence: list[Event], cuts: list[int]
) -> None:
    """GIVEN any events with any text (CR/LF, U+2028, NUL, lone surrogates, ...) and pings
    WHEN encoded as FastAPI sends them and parsed by httpx_sse from arbitrarily cut bytes
    THEN each is one unnamed message, one `data:` line, its id, and the same JSON back."""
    body = b""
    for seq, event in enumerate(sequence, start=1):
        chunk = wire(event, seq)
        body += chunk + (KEEPALIVE_COMMENT if seq % 3 == 0 else b"")
        text = chunk.decode("utf-8")  # strict: the wire is always valid UTF-8
        assert text.endswith("\n\n") and text.count("\n") == 3
        data_line, id_line = text.split("\n")[:2]
        assert data_line.startswith("data: {") and id_line == f"id: {seq}"
    parsed = parse(body, cuts)
    assert [(name, json.loads(data), id_) for name, data, id_ in parsed] == [
        ("message", as_json(payload(event)), str(seq))
        for seq, event in enumerate(sequence, start=1)
    ]


def as_json(value: Any) -> Any:
    """The value as any JSON parser sees it: Python keeps a surrogate pair as two code points
    in a str, JSON (and JavaScript) read it as the one character it encodes."""
    return json.loads(json.dumps(value))


@given(texts)
def test_payload_is_json_with_the_text_unchanged(text: str) -> None:
    """What the client's `JSON.parse` gets back is the text the core produced, byte for byte."""
    assert json.loads(encode_data(Token(text))) == {"token": as_json(text)}
    output = json.loads(encode_data(ToolResult("c1", "calc", False, text)))
    assert output["tool_result"]["output"] == as_json(text)


# Any JSON value, nested a little: what a client might POST.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {}, optional={"prompt": json_values, "session": json_values, "role": json_values}
    ),
)


@given(bodies)
@settings(max_examples=300)
def test_any_json_body_validates_or_is_a_typed_400(value: Any) -> None:
    """GIVEN any JSON value as the `POST /chat` body THEN either it validates and the prompt
    check passes or refuses with 400/413, or pydantic refuses it and the refusal message
    is built without error; never another exception."""
    try:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raw = json.dumps(value).encode()  # a lone surrogate travels as a `\ud800` escape
    try:
        body = ChatBody.model_validate_json(raw)
    except ValidationError as exc:
        message = describe_validation(RequestValidationError(exc.errors()))
        assert isinstance(message, str) and message
        return
    try:
        prompt = check_prompt(body.prompt, 16)
    except (InvalidRequest, PromptTooLong) as exc:
        assert str(exc)
        return
    assert prompt == body.prompt and prompt.strip() and len(prompt) <= 16


@given(st.binary(max_size=64))
def test_any_bytes_as_a_body_validate_or_are_refused(raw: bytes) -> None:
    try:
        ChatBody.model_validate_json(raw)
    except ValidationError as exc:
        assert describe_validation(RequestValidationError(exc.errors()))


@given(json_values, st.integers(1, 50))
def test_check_prompt_accepts_a_string_or_raises_a_request_error(value: Any, limit: int) -> None:
    try:
        assert check_prompt(value, limit) == value
    except PromptTooLong:
        assert isinstance(value, str) and len(value) > limit
    except InvalidRequest:
        assert not isinstance(value, str) or not value.strip() or not is_valid_unicode(value)


# The upstream side: whatever an OpenAI-compatible server puts in a chunk, the adapter either
# turns it into events or raises an `UpstreamError` (the turn's `{"error"}`), nothing else.
chunk_values = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "choices": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "delta": st.one_of(
                                json_values,
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "content": json_values,
                                        "tool_calls": json_values,
                                    },
                                ),
                            ),
                            "finish_reason": json_values,
                            "index": json_values,
                        },
                    ),
                    max_size=2,
                ),
            ),
            "usage": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values}
                ),
            ),
            "error": json_values,
        },
    ),
)


def upstream_body(chunks: list[Any], done: bool) -> bytes:
    lines = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


async def run_adapter(body: bytes) -> list[Any]:
    """Stream one model step from an upstream answering `body`; events, or the error last."""
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )

    async def key() -> str | None:
        return "k"

    received: list[Any] = []
    async with httpx.AsyncClient(transport=transport) as client:
        model = OpenAIChatModel(
            client=client,
            base_url="http://upstream.test/v1",
            model="m",
            api_key=key,
            max_tokens=8,
            max_retries=0,
        )
        try:
            async for event in model.stream([Message(role="user", content="hi")]):
                received.append(event)
        except UpstreamError as exc:
            received.append(exc)
    return received


@given(st.lists(chunk_values, max_size=4), st.booleans())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_any_upstream_chunks_are_events_or_an_upstream_error(chunks: list[Any], done: bool) -> None:
    """GIVEN any JSON chunks (right keys, wrong types) from the provider THEN the adapter yields
    well-typed events ending in a `Completion`, or raises an `UpstreamError` with a message."""
    received = anyio.run(run_adapter, upstream_body(chunks, done))
    *events, last = received
    if isinstance(last, UpstreamError):
        assert str(last)
    else:
        assert isinstance(last, Completion)
        assert isinstance(last.finish_reason, str)
        # None: the provider reported no usage (the turn estimates it).
        assert last.usage is None or isinstance(last.usage.prompt_tokens, int)
        for call in last.tool_calls:
            assert isinstance(call.id, str) and isinstance(call.name, str)
            assert isinstance(call.arguments, str)
    for event in events:
        assert isinstance(event, Token | Reasoning | ToolCallStarted)
        if isinstance(event, Token | Reasoning):
            assert isinstance(event.text, str) and event.text
            event.text.encode("utf-8")  # storable and sendable


async def test_a_lone_surrogate_from_the_provider_becomes_a_replacement_character() -> None:
    chunks = [
        {"choices": [{"delta": {"content": "a\ud800b"}}]},
        {"choices": [{"delta": {"content": "🎉"}, "finish_reason": "stop"}]},
    ]
    body = upstream_body(chunks, True)
    assert b"\\ud800" in body
    events = await run_adapter(body)
    assert events[:2] == [Token("a\ufffdb"), Token("🎉")]


async def test_comment_blocks_between_events_with_ids_are_not_chunks() -> None:
    """Some compatible servers send `id:` lines and `: keep-alive` comments; httpx_sse then
    dispatches an empty event per comment, which is not a malformed chunk."""
    chunk = {"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}
    body = f"id: 1\ndata: {json.dumps(chunk)}\n\n: keep-alive\n\ndata: [DONE]\n\n".encode()
    events = await run_adapter(body)
    assert events[0] == Token("hi") and isinstance(events[-1], Completion)


@pytest.mark.parametrize(
    "chunk",
    [
        {"choices": [{"delta": {"content": 42}}]},
        {"choices": [None]},
        {"choices": [{"delta": {"tool_calls": [{"index": "0", "id": "c"}]}}]},
        {"usage": {"prompt_tokens": "many"}},
        {"choices": [{"delta": {}, "finish_reason": ["stop"]}]},
    ],
)
async def test_a_chunk_with_wrong_types_is_a_protocol_error(chunk: dict[str, Any]) -> None:
    [error] = await run_adapter(upstream_body([chunk], True))
    assert isinstance(error, UpstreamProtocolError)
    assert "does not understand" in str(error)


async def test_an_error_chunk_without_a_message_still_says_something() -> None:
    [error] = await run_adapter(upstream_body([{"error": {"code": 1}}], False))
    assert isinstance(error, UpstreamRejected) and str(error)


@pytest.mark.parametrize("text", ["lone \ud800 high", "\udfff", "split \ud83d"])
def test_a_lone_surrogate_from_the_model_is_relayed_as_valid_utf8(text: str) -> None:
    """The wire stays valid UTF-8 and the client's JSON parser gets the same string back."""
    data = wire(Token(text), 1)
    assert json.loads(data.decode("utf-8").split("\n")[0].removeprefix("data: ")) == {"token": text}
