"""The OpenAI-compatible simulator: chunk shapes, scripted replies, faults, wire options, defaults.

Unit tests drive the ASGI app in-process (httpx.ASGITransport, or raw ASGI calls where the exact
sequence of body writes matters); tests/integration/test_simulator_socket.py covers a real socket.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from hypothesis import given
from hypothesis import strategies as st

from simulator import (
    Simulator,
    check_reply,
    create_simulator,
    default_reply,
    split_words,
)

URL = "/v1/chat/completions"
MODEL = "gpt-test-model"
CALCULATOR = {"type": "function", "function": {"name": "calculator", "parameters": {}}}
CLOCK = {"type": "function", "function": {"name": "get_current_time", "parameters": {}}}


def request_body(prompt: str = "Hi there", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "stream": True,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
        ],
    }
    body.update(extra)
    return body


@pytest.fixture
def app() -> FastAPI:
    return create_simulator(token_delay_ms=0)


@pytest.fixture
def sim(app: FastAPI) -> Simulator:
    simulator: Simulator = app.state.simulator
    return simulator


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        yield http


async def sse_data(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> list[str]:
    """The `data` of every event of one streamed completion, in order."""
    async with aconnect_sse(client, "POST", URL, json=body, **kw) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [event.data async for event in source.aiter_sse()]


def chunks_of(data: list[str]) -> list[dict[str, Any]]:
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def content_of(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        c["choices"][0]["delta"]["content"]
        for c in chunks[1:]
        if c["choices"] and "content" in c["choices"][0]["delta"]
    ]


async def raw_asgi(app: FastAPI, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[float]]:
    """Call the app as a server would; return every message it sent, and when."""
    sent: list[dict[str, Any]] = []
    stamps: list[float] = []
    payload = json.dumps(body).encode()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))
        stamps.append(time.monotonic())

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    return sent, stamps


def body_bytes(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# --- chunk shapes ------------------------------------------------------------------------------


async def test_stream_has_openai_chunk_shapes_and_usage_chunk(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    # GIVEN a scripted text reply and a request asking for usage
    sim.script({"content": "Hello world!"})
    # WHEN it is streamed
    data = await sse_data(client, request_body(stream_options={"include_usage": True}))
    chunks = chunks_of(data)
    # THEN the role chunk comes first, then content, the finish chunk, the usage chunk, [DONE]
    first = chunks[0]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of(chunks) == ["Hello", " world", "!"]
    finish = chunks[-2]
    assert finish["choices"][0]["delta"] == {}
    assert finish["choices"][0]["finish_reason"] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    for chunk in chunks[:-1]:
        assert chunk["usage"] is None
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert chunk["id"].startswith("chatcmpl-")
        assert chunk["id"] == first["id"]
        assert isinstance(chunk["created"], int)
        assert chunk["system_fingerprint"]
        (choice,) = chunk["choices"]
        assert choice["index"] == 0
        assert choice["logprobs"] is None
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None] * 4


async def test_no_usage_chunk_unless_asked(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"content": "Hello world!"})
    chunks = chunks_of(await sse_data(client, request_body()))
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_usage_and_finish_reason_overrides(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script(
        {
            "content": "cut short",
            "finish_reason": "length",
            "usage": {"prompt_tokens": 11, "completion_tokens": 2},
        }
    )
    chunks = chunks_of(await sse_data(client, request_body(stream_options={"include_usage": True})))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}


EXACT_CHUNKS = [
    " leading space",
    "emoji 😀👍🏽",
    "中文字符",
    "line\nbreak\r\n",
    'quote " and \\ backslash',
    "data: not an event\n\n",
    "",
    "   ",
    "\u2028\u0000tab\t",
]


async def test_explicit_chunks_round_trip_exactly(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.script({"chunks": EXACT_CHUNKS})
    chunks = chunks_of(await sse_data(client, request_body()))
    assert content_of(chunks) == EXACT_CHUNKS


def test_split_words_keeps_leading_spaces() -> None:
    assert split_words("Hello world!") == ["Hello", " world", "!"]
    assert split_words("  two  spaces ") == ["  two", "  spaces", " "]
    assert split_words("") == []


@given(st.text())
def test_split_words_is_lossless(text: str) -> None:
    assert "".join(split_words(text)) == text


# --- tool calls --------------------------------------------------------------------------------


async def test_tool_call_fragments_reassemble(client: httpx.AsyncClient, sim: Simulator) -> None:
    # GIVEN two calls, one with an explicit id and malformed JSON arguments, after some text
    calls = [
        {"name": "calculator", "arguments": '{"expression": "6*7"}'},
        {"name": "lookup", "arguments": '{"q": "unterminated', "id": "call_fixed"},
    ]
    sim.script({"content": "Let me check.", "tool_calls": calls})
    # WHEN streamed
    chunks = chunks_of(await sse_data(client, request_body()))
    # THEN each call opens with id/type/name and empty arguments, then 2+ argument fragments
    assert "".join(content_of(chunks)) == "Let me check."
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in
              c["choices"][0]["delta"]]  # fmt: skip
    by_index: dict[int, list[dict[str, Any]]] = {}
    for delta in deltas:
        by_index.setdefault(delta["index"], []).append(delta)
    assert sorted(by_index) == [0, 1]
    for index, call in enumerate(calls):
        opening, *fragments = by_index[index]
        assert opening["type"] == "function"
        assert opening["function"] == {"name": call["name"], "arguments": ""}
        assert re.fullmatch(r"call_\w+", opening["id"])
        assert len(fragments) >= 2
        assert all(set(f) == {"index", "function"} for f in fragments)
        assert "".join(f["function"]["arguments"] for f in fragments) == call["arguments"]
    assert by_index[1][0]["id"] == "call_fixed"
    assert by_index[0][0]["id"] != by_index[1][0]["id"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# --- faults ------------------------------------------------------------------------------------


async def test_fault_401_echoes_a_masked_key(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"fault": "401"})
    key = "sk-test-abcdefghijklmnop-9876"
    response = await client.post(
        URL, json=request_body(), headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("Incorrect API key provided: sk-*")
    assert "9876" in error["message"]  # realistic: part of the key comes back
    assert key not in error["message"]
    assert sim.log[-1]["outcome"] == "401"


async def test_fault_429_sends_retry_after(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"fault": "429", "retry_after": 2}, {"fault": "429"})
    first = await client.post(URL, json=request_body())
    assert first.status_code == 429
    assert first.headers["retry-after"] == "2"
    assert first.headers["retry-after-ms"] == "2000"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    second = await client.post(URL, json=request_body())
    assert second.headers["retry-after"] == "1"


async def test_fault_500_times_then_recovers(client: httpx.AsyncClient, sim: Simulator) -> None:
    # GIVEN a 500 reused three times, then a good reply
    sim.script({"fault": "500", "times": 3}, {"content": "recovered"})
    # WHEN four requests arrive
    statuses = [(await client.post(URL, json=request_body())).status_code for _ in range(3)]
    data = await sse_data(client, request_body())
    # THEN three 500s with OpenAI's error body, then the scripted reply; the queue is empty
    assert statuses == [500, 500, 500]
    assert "".join(content_of(chunks_of(data))) == "recovered"
    assert sim.queued == 0
    assert [e["outcome"] for e in sim.log] == ["500", "500", "500", "completed"]


async def test_other_http_faults_are_allowed(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"fault": "503"})
    response = await client.post(URL, json=request_body())
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


async def test_fault_cut_ends_body_without_completing(app: FastAPI, sim: Simulator) -> None:
    # GIVEN a cut after 2 content chunks
    sim.script({"content": "one two three four five", "fault": "cut", "after_chunks": 2})
    # WHEN the app streams it
    sent, _ = await raw_asgi(app, request_body())
    # THEN the body is never completed (more_body stays true): the server must drop the socket
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert all(m.get("more_body") for m in bodies)
    raw = body_bytes(sent).decode()
    assert 'finish_reason":"stop' not in raw and "[DONE]" not in raw
    events = [json.loads(e[len("data: ") :]) for e in raw.split("\n\n") if e]
    assert content_of(events) == ["one", " two"]
    assert sim.log[-1]["outcome"] == "cut"
    assert sim.log[-1]["chunks_sent"] == 2
    assert sim.open_streams == 0


async def test_fault_cut_defaults_to_three_chunks(app: FastAPI, sim: Simulator) -> None:
    sim.script({"fault": "cut"})
    sent, _ = await raw_asgi(app, request_body())
    assert body_bytes(sent).count(b'"content":"') == 1 + 3  # the role chunk's "" + 3 chunks
    assert sim.log[-1]["chunks_sent"] == 3


async def test_fault_malformed_sends_non_json_data(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.script({"content": "a b c d", "fault": "malformed", "after_chunks": 1})
    data = await sse_data(client, request_body())
    assert data[2] == "{not json"
    json.loads(data[1])
    assert sim.log[-1]["outcome"] == "malformed"


async def test_fault_stall_delays_first_chunk(app: FastAPI, sim: Simulator) -> None:
    sim.script({"content": "slow start", "fault": "stall", "stall_seconds": 0.3})
    sent, stamps = await raw_asgi(app, request_body())
    first_body = next(i for i, m in enumerate(sent) if m["type"] == "http.response.body")
    assert stamps[first_body] - stamps[0] >= 0.29
    assert b"[DONE]" in body_bytes(sent)
    assert sim.log[-1]["outcome"] == "stall"


async def test_fault_stall_after_chunks(app: FastAPI, sim: Simulator) -> None:
    sim.script({"chunks": ["a", "b", "c"], "fault": "stall", "stall_seconds": 0.3,
                "after_chunks": 2})  # fmt: skip
    sent, stamps = await raw_asgi(app, request_body())
    bodies = [(m["body"], t) for m, t in zip(sent, stamps, strict=True) if m.get("body")]
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(bodies)]
    # role, a, b | stall | c, finish, [DONE]: the only long gap is before "c"
    assert b'"content":"c"' in bodies[3][0]
    assert gaps[2] >= 0.29
    assert max(gaps[:2] + gaps[3:]) < 0.2


async def test_fault_no_finish(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"content": "no end", "fault": "no_finish"})
    chunks = chunks_of(await sse_data(client, request_body()))
    assert content_of(chunks) == ["no", " end"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


async def test_fault_error_chunk_sends_an_error_object_mid_stream(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    # GIVEN a provider that fails after two chunks, its error text scripted
    sim.script({"content": "a b c", "fault": "error_chunk", "after_chunks": 2,
                "error_message": "quota gone"})  # fmt: skip
    # WHEN it streams
    data = await sse_data(client, request_body())
    # THEN role + two chunks, then OpenAI's error object, and the body ends (no finish, no DONE)
    assert [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:3]] == [
        "", "a", " b"
    ]  # fmt: skip
    assert json.loads(data[3]) == {
        "error": {"message": "quota gone", "type": "server_error", "param": None, "code": None}
    }
    assert len(data) == 4
    assert sim.log[-1]["outcome"] == "error_chunk"


async def test_error_message_replaces_an_http_fault_text(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.script(
        {"fault": "400", "error_message": "bad thing"},
        {"fault": "401", "error_message": "no key"},
        {"fault": "500"},
    )
    bodies = [(await client.post(URL, json=request_body())).json() for _ in range(3)]
    assert [b["error"]["message"] for b in bodies[:2]] == ["bad thing", "no key"]
    assert bodies[2]["error"]["message"].startswith("The server had an error")


async def test_fault_drop_sends_headers_then_closes_before_any_chunk(
    app: FastAPI, sim: Simulator
) -> None:
    # GIVEN a drop before the first token, then a good reply
    sim.script({"content": "never sent", "fault": "drop"}, {"content": "second"})
    # WHEN the app answers the first request as a server would
    sent, _ = await raw_asgi(app, request_body())
    # THEN a 200 event-stream head went out, then nothing: no chunk, and the body never completes
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert body_bytes(sent) == b""
    assert all(m.get("more_body") for m in sent if m["type"] == "http.response.body")
    assert sim.log[-1]["outcome"] == "drop"
    assert sim.log[-1]["chunks_sent"] == 0
    assert sim.open_streams == 0
    assert sim.queued == 1  # the drop used up its own reply only


async def test_fault_no_done_sends_the_whole_reply_without_done(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.script({"content": "all here", "fault": "no_done"})
    async with aconnect_sse(
        client, "POST", URL, json=request_body(stream_options={"include_usage": True})
    ) as source:
        data = [event.data async for event in source.aiter_sse()]
    assert "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    assert content_of(chunks) == ["all", " here"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert sim.log[-1]["outcome"] == "no_done"


async def test_usage_false_ignores_include_usage(client: httpx.AsyncClient, sim: Simulator) -> None:
    # GIVEN a provider that sends no usage, asked for it
    sim.script({"content": "no counts", "usage": False})
    chunks = chunks_of(await sse_data(client, request_body(stream_options={"include_usage": True})))
    # THEN no usage chunk and no `usage` field at all, and the reply is whole
    assert all("usage" not in c for c in chunks)
    assert content_of(chunks) == ["no", " counts"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def context_body(words: int) -> dict[str, Any]:
    return request_body(" ".join(["word"] * words))


async def test_context_window_refuses_a_prompt_over_it_with_openais_400(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    # GIVEN a 10-token window ("Be brief." is 2 words) and one scripted reply
    sim.context_tokens = 10
    sim.script({"content": "fits"})
    # WHEN a prompt of 9 words (11 in all) arrives, then one of 8 (10 in all)
    refused = await client.post(URL, json=context_body(9))
    data = await sse_data(client, context_body(8))
    # THEN the first is OpenAI's 400 context_length_exceeded and uses no reply; the second fits
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("This model's maximum context length is 10 tokens.")
    assert "resulted in 11 tokens" in error["message"]
    assert "".join(content_of(chunks_of(data))) == "fits"
    assert [e["outcome"] for e in sim.log] == ["context_length_exceeded", "completed"]
    assert sim.log[0]["status"] == 400


async def test_context_window_is_off_by_default(client: httpx.AsyncClient, sim: Simulator) -> None:
    assert sim.context_tokens is None
    data = await sse_data(client, context_body(5000))
    assert chunks_of(data)


def test_create_simulator_takes_a_context_window() -> None:
    app = create_simulator(token_delay_ms=0, context_tokens=300)
    assert app.state.simulator.context_tokens == 300


async def test_fault_429_retry_after_ms_is_its_own_header(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    sim.script({"fault": "429", "retry_after": 3, "retry_after_ms": 200})
    response = await client.post(URL, json=request_body())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "200"


def test_check_reply_refuses_typos() -> None:
    with pytest.raises(ValueError, match="unknown reply keys"):
        check_reply({"contnet": "x"})
    with pytest.raises(ValueError, match="unknown fault"):
        check_reply({"fault": "explode"})
    with pytest.raises(ValueError, match="error_message"):
        check_reply({"fault": "400", "error_message": 400})
    with pytest.raises(ValueError, match="wire"):
        check_reply({"content": "x", "wire": {"crlf": True, "bogus": True}})
    with pytest.raises(ValueError, match="times"):
        check_reply({"fault": "500", "times": 0})
    with pytest.raises(ValueError, match="unknown fault"):
        check_reply({"fault": "dropped"})
    with pytest.raises(ValueError, match="usage"):
        check_reply({"content": "x", "usage": True})
    with pytest.raises(ValueError, match="usage"):
        check_reply({"content": "x", "usage": {"prompt_tokens": 1, "total": 2}})
    with pytest.raises(ValueError, match="usage"):
        check_reply({"content": "x", "usage": {"prompt_tokens": "1"}})
    with pytest.raises(ValueError, match="retry_after_ms"):
        check_reply({"fault": "429", "retry_after_ms": "200"})
    with pytest.raises(ValueError, match="unknown reply keys"):
        check_reply({"content": "x", "context_tokens": 10})  # a window is simulator-wide
    for fine in ({"fault": "drop"}, {"fault": "no_done"}, {"content": "x", "usage": False},
                 {"fault": "429", "retry_after": 3, "retry_after_ms": 200}):  # fmt: skip
        assert check_reply(fine) == fine


# --- wire options ------------------------------------------------------------------------------


async def test_wire_crlf_comments_nospace(app: FastAPI, sim: Simulator) -> None:
    sim.script({"chunks": ["x"], "wire": {"crlf": True, "comments": True, "nospace": True}})
    sent, _ = await raw_asgi(app, request_body())
    raw = body_bytes(sent)
    events = raw.split(b"\r\n\r\n")
    assert events[-1] == b""
    assert events[0].startswith(b'data:{"id":"chatcmpl-')
    assert events[1] == b": keep-alive"
    assert events[-2] == b"data:[DONE]"
    assert events[-3] == b": keep-alive"
    assert raw.count(b"\n") == raw.count(b"\r\n")  # no bare LF anywhere
    assert len(events) == 4 + 3 + 1  # role, x, finish, [DONE]; three comments; the tail ""


async def test_wire_options_parse_with_a_conforming_client(
    client: httpx.AsyncClient, sim: Simulator
) -> None:
    wire = {"crlf": True, "comments": True, "nospace": True, "split": True}
    sim.script({"chunks": EXACT_CHUNKS, "wire": wire})
    assert content_of(chunks_of(await sse_data(client, request_body()))) == EXACT_CHUNKS


async def test_wire_split_writes_each_event_in_two_parts(app: FastAPI, sim: Simulator) -> None:
    sim.script({"chunks": ["é😀"], "wire": {"split": True}})
    sent, _ = await raw_asgi(app, request_body())
    parts = [m["body"] for m in sent if m.get("body")]
    assert len(parts) == 2 * 4  # role, chunk, finish, [DONE]
    assert not any(p.endswith(b"\n\n") for p in parts[0::2])


# --- stamps and pacing -------------------------------------------------------------------------


async def test_stamp_chunks_carry_monotonic_ns(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"stamp": True, "count": 5})
    before = time.monotonic_ns()
    texts = content_of(chunks_of(await sse_data(client, request_body())))
    after = time.monotonic_ns()
    assert len(texts) == 5
    assert all(re.fullmatch(r"\d+ ", t) for t in texts)
    stamps = [int(t) for t in texts]
    assert stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after


async def test_delay_paces_chunks(app: FastAPI, sim: Simulator) -> None:
    sim.script({"chunks": ["a", "b", "c", "d", "e"], "delay_ms": 40})
    started = time.monotonic()
    await raw_asgi(app, request_body())
    assert 0.19 <= time.monotonic() - started < 2


# --- auth, validation, log, control routes -----------------------------------------------------


async def test_api_key_is_required_when_configured() -> None:
    app = create_simulator(token_delay_ms=0, api_key="sk-right-key-0001")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        missing = await client.post(URL, json=request_body())
        wrong = await client.post(
            URL, json=request_body(), headers={"authorization": "Bearer sk-wrong-key-0002"}
        )
        right = await client.post(
            URL, json=request_body(), headers={"authorization": "Bearer sk-right-key-0001"}
        )
        models = await client.get("/v1/models")
    assert missing.status_code == 401
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "0002" in wrong.json()["error"]["message"]
    assert right.status_code == 200
    assert models.status_code == 401
    assert [e["outcome"] for e in app.state.simulator.log] == ["401", "401", "completed"]


@pytest.mark.parametrize(
    ("content", "param"),
    [(b"{not json", None), (b"[1, 2]", None), (b'{"model": "m"}', "messages"),
     (b'{"model": "m", "messages": "hi"}', "messages")],
)  # fmt: skip
async def test_bad_body_is_400_and_keeps_the_queue(
    client: httpx.AsyncClient, sim: Simulator, content: bytes, param: str | None
) -> None:
    sim.script({"content": "kept"})
    response = await client.post(URL, content=content)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == param
    assert sim.queued == 1
    assert sim.log[-1]["outcome"] == "400"


async def test_log_records_requests(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"content": "Hello world!"})
    body = request_body()
    await sse_data(client, body, headers={"authorization": "Bearer sk-log"})
    (entry,) = sim.log
    assert entry["body"] == body
    assert entry["authorization"] == "Bearer sk-log"
    assert entry["outcome"] == "completed"
    assert entry["status"] == 200
    assert entry["chunks_sent"] == 3
    assert entry["closed_at"] is not None
    assert entry["started_at"] <= entry["closed_at"] <= time.monotonic()
    assert sim.open_streams == 0


async def test_control_routes(client: httpx.AsyncClient, sim: Simulator) -> None:
    queued = await client.post("/_sim/script", json=[{"content": "one"}, {"fault": "500"}])
    assert queued.json() == {"queued": 2}
    assert (await client.post("/_sim/script", json=[{"bogus": 1}])).status_code == 400
    assert sim.queued == 2
    await sse_data(client, request_body())
    log = (await client.get("/_sim/log")).json()
    assert [e["outcome"] for e in log] == ["completed"]
    assert log[0]["body"]["model"] == MODEL
    assert (await client.post("/_sim/reset")).status_code == 200
    assert sim.queued == 0
    assert (await client.get("/_sim/log")).json() == []


async def test_models_and_no_openapi(client: httpx.AsyncClient, app: FastAPI) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} >= {"simulator"}
    assert app.openapi()["paths"] == {}
    assert (await client.get("/openapi.json")).status_code == 404


async def test_non_stream_completion(client: httpx.AsyncClient, sim: Simulator) -> None:
    sim.script({"content": "Whole answer."}, {"tool_calls": [{"name": "f", "arguments": "{}"}]})
    text = (await client.post(URL, json=request_body(stream=False))).json()
    assert text["object"] == "chat.completion"
    assert text["model"] == MODEL
    assert text["choices"][0]["message"]["content"] == "Whole answer."
    assert text["choices"][0]["finish_reason"] == "stop"
    assert text["usage"]["total_tokens"] == text["usage"]["prompt_tokens"] + 3
    tool = (await client.post(URL, json=request_body(stream=False))).json()
    (call,) = tool["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "f", "arguments": "{}"}
    assert tool["choices"][0]["finish_reason"] == "tool_calls"


# --- default behaviour -------------------------------------------------------------------------


async def test_default_text_says_it_is_the_simulator(client: httpx.AsyncClient) -> None:
    text = "".join(content_of(chunks_of(await sse_data(client, request_body("Tell me a joke")))))
    assert "built-in simulator" in text
    assert "OPENAI_API_KEY" in text
    assert "“Tell me a joke”" in text


async def test_default_calls_calculator_for_arithmetic(client: httpx.AsyncClient) -> None:
    body = request_body("What is 6*7?", tools=[CALCULATOR, CLOCK])
    chunks = chunks_of(await sse_data(client, body))
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in
              c["choices"][0]["delta"]]  # fmt: skip
    assert deltas[0]["function"]["name"] == "calculator"
    arguments = "".join(d["function"]["arguments"] for d in deltas)
    assert json.loads(arguments) == {"expression": "6*7"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("prompt", "tools", "expected"),
    [
        ("What is 6*7?", [CALCULATOR], ("calculator", {"expression": "6*7"})),
        ("What is 6*7?", [], None),
        ("What is 6*7?", [CLOCK], None),
        ("What time is it in Europe/Oslo?", [CALCULATOR, CLOCK],
         ("get_current_time", {"timezone": "Europe/Oslo"})),
        ("what's the date today", [CLOCK], ("get_current_time", {"timezone": "UTC"})),
        ("what time is it", [CALCULATOR], None),
        ("Hello there", [CALCULATOR, CLOCK], None),
    ],
)  # fmt: skip
def test_default_reply_choice(
    prompt: str, tools: list[Any], expected: tuple[str, dict[str, str]] | None
) -> None:
    reply = default_reply(request_body(prompt, tools=tools))
    if expected is None:
        assert "tool_calls" not in reply
        assert "built-in simulator" in reply["content"]
    else:
        (call,) = reply["tool_calls"]
        assert (call["name"], json.loads(call["arguments"])) == expected


def test_default_answers_from_tool_results() -> None:
    body = request_body("What is 6*7 and the time?", tools=[CALCULATOR, CLOCK])
    body["messages"] += [
        {"role": "assistant", "content": "old", "tool_calls": []},
        {"role": "tool", "tool_call_id": "old", "content": "999"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": ""}},
            {"id": "c2", "type": "function", "function": {"name": "get_current_time",
                                                          "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "tool", "tool_call_id": "c2", "content": '{"result": "12:00 UTC"}'},
    ]  # fmt: skip
    reply = default_reply(body)
    assert reply == {"content": "The calculator says **42**. The current time is **12:00 UTC**."}
