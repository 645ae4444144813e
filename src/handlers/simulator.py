"""The built-in OpenAI-compatible simulator: scripted replies and faults on the real wire.

Tests, the benchmark, the browser tests and `make serve` without OPENAI_API_KEY talk to it over
HTTP exactly as they would talk to OpenAI's Chat Completions API, so the streaming client is
exercised byte for byte. Replies are queued with `Simulator.script(...)` (or `POST /_sim/script`);
with an empty queue a small deterministic "agent" answers (text, calculator and time tool calls).

Reply objects (plain dicts, JSON-compatible; see `Reply`):

- `{"content": "Hello world"}` or `{"chunks": ["Hel", "lo"]}`: a streamed text answer.
  Optional `finish_reason`, `delay_ms` (per-chunk pace), `usage` (`prompt_tokens`,
  `completion_tokens`), `stamp` + `count` (each chunk is `str(time.monotonic_ns()) + " "`).
- `{"tool_calls": [{"name": ..., "arguments": "<raw text>", "id"?: ...}], "content"?: ...}`.
- `{"fault": "401" | "429" | "500" | any 4xx/5xx | "cut" | "malformed" | "stall" | "no_finish"}`
  with `after_chunks`, `retry_after`, `stall_seconds`; `times: n` reuses a reply n times.
- `wire`: `{"crlf": true, "comments": true, "nospace": true, "split": true}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = [
    "FAULTS",
    "LogEntry",
    "Reply",
    "Simulator",
    "ToolCallSpec",
    "WireOptions",
    "create_simulator",
    "split_words",
]


class ToolCallSpec(TypedDict):
    """One scripted tool call; `arguments` is raw text, so it may be malformed JSON on purpose."""

    name: str
    arguments: str
    id: NotRequired[str]


class WireOptions(TypedDict, total=False):
    """Byte-level variations a conforming SSE client must accept."""

    crlf: bool  # CRLF line endings
    comments: bool  # ": keep-alive" comment blocks between events
    nospace: bool  # "data:{...}" without the space
    split: bool  # every event written in two parts, cut mid-JSON (maybe mid-UTF-8 character)


class Reply(TypedDict, total=False):
    """One scripted reply; each request pops the next one from the queue."""

    content: str
    chunks: list[str]
    finish_reason: str
    delay_ms: float
    usage: dict[str, int]
    tool_calls: list[ToolCallSpec]
    fault: str
    times: int
    after_chunks: int
    retry_after: float
    stall_seconds: float
    wire: WireOptions
    stamp: bool
    count: int


class LogEntry(TypedDict):
    """What the simulator saw of one request and how the response ended."""

    body: Any  # the request JSON (None when the body was not JSON)
    authorization: str | None
    started_at: float  # time.monotonic()
    outcome: str  # "open" while streaming, then "completed", "client_closed" or the fault name
    status: int
    chunks_sent: int  # content and tool-call delta chunks actually handed to the server
    closed_at: float | None  # time.monotonic() when the response ended, for any reason


STREAM_FAULTS = frozenset({"cut", "malformed", "stall", "no_finish"})
FAULTS = frozenset({"401", "429", "500"}) | STREAM_FAULTS
_REPLY_KEYS = frozenset(Reply.__annotations__)
_WIRE_KEYS = frozenset(WireOptions.__annotations__)
_HTTP_FAULT = re.compile(r"[45]\d\d")
_WORDISH = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")
_DEFAULT_MODEL = "simulator"
_LOG_LIMIT = 1000


def _compact(value: Any) -> str:
    """JSON as OpenAI writes it on the wire: no spaces, raw UTF-8 (clients must decode it)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def split_words(text: str) -> list[str]:
    """Split text into word-ish chunks that keep their leading spaces: "Hi you!" -> Hi, " you", !.

    Lossless: `"".join(split_words(t)) == t` for every string.
    """
    return _WORDISH.findall(text)


def check_reply(reply: Mapping[str, Any]) -> Reply:
    """Refuse a reply with unknown keys or fault names, so a typo in a test fails loudly."""
    if not isinstance(reply, Mapping):
        raise ValueError("a reply must be a JSON object")
    unknown = set(reply) - _REPLY_KEYS
    if unknown:
        raise ValueError(f"unknown reply keys: {sorted(unknown)}")
    fault = reply.get("fault")
    if fault is not None and fault not in FAULTS and not _HTTP_FAULT.fullmatch(str(fault)):
        raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)} or any 4xx/5xx")
    wire = reply.get("wire", {})
    if not isinstance(wire, Mapping) or set(wire) - _WIRE_KEYS:
        raise ValueError(f"wire options are {sorted(_WIRE_KEYS)}")
    chunks = reply.get("chunks")
    if chunks is not None and not (
        isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
    ):
        raise ValueError("chunks must be a list of strings")
    for call in reply.get("tool_calls", []):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError("each tool call needs a name")
        if not isinstance(call.get("arguments", ""), str):
            raise ValueError("tool call arguments are raw text (a string)")
    times = reply.get("times", 1)
    if not isinstance(times, int) or times < 1:
        raise ValueError("times must be a positive integer")
    return cast(Reply, dict(reply))


# --- OpenAI's error bodies ---------------------------------------------------------------------


def _error_body(message: str, type_: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _masked(key: str) -> str:
    """Mask a key the way OpenAI's 401 message does: prefix and last four characters show."""
    if len(key) < 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _bearer_key(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def _unauthorized(authorization: str | None) -> JSONResponse:
    key = _bearer_key(authorization)
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return JSONResponse(_error_body(message, "invalid_request_error", None), status_code=401)
    message = (
        f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return JSONResponse(
        _error_body(message, "invalid_request_error", "invalid_api_key"), status_code=401
    )


def _http_fault(reply: Reply, authorization: str | None, model: str) -> JSONResponse:
    status = int(reply["fault"])
    if status == 401:
        return _unauthorized(authorization or "Bearer sk-simulated-key-xyz1")
    if status == 429:
        retry_after = float(reply.get("retry_after", 1))
        seconds = f"{retry_after:g}"
        message = (
            f"Rate limit reached for {model} in organization org-simulator on tokens per min "
            f"(TPM): Limit 30000, Used 29500, Requested 1200. Please try again in {seconds}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return JSONResponse(
            _error_body(message, "tokens", "rate_limit_exceeded"),
            status_code=429,
            headers={"retry-after": seconds, "retry-after-ms": str(round(retry_after * 1000))},
        )
    if status >= 500:
        message = "The server had an error while processing your request. Sorry about that!"
        return JSONResponse(_error_body(message, "server_error", None), status_code=status)
    return JSONResponse(
        _error_body(f"Simulated HTTP {status}.", "invalid_request_error", None),
        status_code=status,
    )


def _bad_request(message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(_error_body(message, "invalid_request_error", None, param), status_code=400)


# --- the default "agent" (queue empty) ---------------------------------------------------------

_EXPRESSION_RUN = re.compile(r"[-+*/%().\d\s]+")
_BINARY_OP = re.compile(r"[\d.)]\s*(?:\*\*|[-+*/%])\s*[-+(.\d]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ASKS_TIME = re.compile(r"\b(?:time|date|clock)\b", re.IGNORECASE)
_IANA_ZONE = re.compile(
    r"\b(?:Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Europe|Indian|Pacific|Etc)"
    r"/[A-Za-z_+-]+(?:/[A-Za-z_+-]+)?"
)
_ECHO_LIMIT = 200


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if isinstance(m, dict)]


def _last_user_text(body: Mapping[str, Any]) -> str:
    return next(
        (_text_of(m.get("content")) for m in reversed(_messages(body)) if m.get("role") == "user"),
        "",
    )


def _declared_tools(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            name = tool["function"].get("name")
            if isinstance(name, str):
                names.add(name)
    return names


def find_expression(text: str) -> str | None:
    """The first arithmetic expression in text (digits and at least one operator), if any."""
    for match in _EXPRESSION_RUN.finditer(text):
        candidate = match.group().strip().rstrip(".").strip()
        while candidate.endswith(")") and candidate.count(")") > candidate.count("("):
            candidate = candidate[:-1].rstrip()
        while candidate.startswith("(") and candidate.count("(") > candidate.count(")"):
            candidate = candidate[1:].lstrip()
        if _BINARY_OP.search(candidate) and not _ISO_DATE.search(candidate):
            return candidate
    return None


def _tool_summary(name: str, output: str) -> str:
    try:
        parsed = json.loads(output)
    except ValueError:
        parsed = output
    if isinstance(parsed, dict):
        if "error" in parsed:
            return f"The `{name}` tool reported an error: {parsed['error']}."
        if "result" in parsed:
            parsed = parsed["result"]
    value = parsed if isinstance(parsed, str) else json.dumps(parsed, ensure_ascii=False)
    if name == "calculator":
        return f"The calculator says **{value}**."
    if name == "get_current_time":
        return f"The current time is **{value}**."
    return f"The `{name}` tool returned **{value}**."


def default_reply(body: Mapping[str, Any]) -> Reply:
    """What the simulator answers when nothing is scripted: deterministic and demo-friendly."""
    messages = _messages(body)
    if messages and messages[-1].get("role") == "tool":
        last_assistant = max(
            (i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1
        )
        names: dict[str, str] = {}
        if last_assistant >= 0:
            for call in messages[last_assistant].get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    names[str(call.get("id"))] = str(call["function"].get("name", "tool"))
        summaries = [
            _tool_summary(
                str(m.get("name") or names.get(str(m.get("tool_call_id")), "tool")),
                _text_of(m.get("content")),
            )
            for m in messages[last_assistant + 1 :]
            if m.get("role") == "tool"
        ]
        return {"content": " ".join(summaries)}

    prompt = _last_user_text(body)
    tools = _declared_tools(body)
    if "calculator" in tools:
        expression = find_expression(prompt)
        if expression is not None:
            arguments = json.dumps({"expression": expression})
            return {"tool_calls": [{"name": "calculator", "arguments": arguments}]}
    if "get_current_time" in tools and _ASKS_TIME.search(prompt):
        zone = _IANA_ZONE.search(prompt)
        arguments = json.dumps({"timezone": zone.group() if zone else "UTC"})
        return {"tool_calls": [{"name": "get_current_time", "arguments": arguments}]}
    return {"content": _hello(prompt)}


def _hello(prompt: str) -> str:
    echo = prompt if len(prompt) <= _ECHO_LIMIT else prompt[:_ECHO_LIMIT] + "…"
    return (
        "Hello from the **built-in simulator** (no `OPENAI_API_KEY` is set, so no real model "
        f"is called). You said: “{echo}”. Set `OPENAI_API_KEY` to talk to a real model."
    )


def _word_count(body: Mapping[str, Any]) -> int:
    return sum(len(_text_of(m.get("content")).split()) for m in _messages(body))


def _fragments(arguments: str) -> list[str]:
    """Split tool-call arguments into 2+ fragments (given 2+ characters), as OpenAI does."""
    if len(arguments) < 2:
        return [arguments] if arguments else []
    size = max(1, min(8, len(arguments) // 2))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


# --- the stream --------------------------------------------------------------------------------

# Set in the request's context when the simulator drops a connection on purpose ("cut"), so the
# server's "returned without completing response" line for that request is not logged as a bug.
_cutting: contextvars.ContextVar[bool] = contextvars.ContextVar("sim_cutting", default=False)
_UNCOMPLETED = "ASGI callable returned without completing response."


class _DeliberateCutFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cutting.get() and record.getMessage() == _UNCOMPLETED)


_cut_filter = _DeliberateCutFilter()


@dataclass(slots=True)
class _Plan:
    """Everything one streamed response needs, decided before the first byte."""

    reply: Reply
    model: str
    include_usage: bool
    delay: float
    usage: dict[str, int]
    tool_calls: list[tuple[str, str, list[str]]] = field(default_factory=list)
    cut: bool = False


class _Wire:
    """Encodes events the way the reply's `wire` options ask for."""

    __slots__ = ("comment", "data", "done", "eol", "split")

    def __init__(self, options: WireOptions) -> None:
        self.eol = "\r\n" if options.get("crlf") else "\n"
        self.data = "data:" if options.get("nospace") else "data: "
        self.comment = f": keep-alive{self.eol}{self.eol}" if options.get("comments") else ""
        self.done = f"{self.data}[DONE]{self.eol}{self.eol}".encode()
        self.split = bool(options.get("split"))

    def event(self, payload: str) -> bytes:
        return f"{self.data}{payload}{self.eol}{self.eol}".encode()


class _SimulatedStream(StreamingResponse):
    """A StreamingResponse that records how it ended and can drop the connection mid-body.

    Plain Starlette rather than FastAPI's SSE encoder: the simulator must control every byte
    (CRLF, comment lines, `data:` without a space, non-JSON data, an unterminated body).
    """

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        simulator: Simulator,
        entry: LogEntry,
        plan: _Plan,
    ) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._body = body
        self._simulator = simulator
        self._entry = entry
        self._plan = plan

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not self._plan.cut:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # On a cut the body is never completed: returning now makes the server close the socket.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette cancels stream_response when the client disconnects (http.disconnect);
        # whatever the reason the response ends, the finally below records it.
        self._simulator.open_streams += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._simulator.open_streams -= 1
            if self._entry["outcome"] == "open":
                self._entry["outcome"] = "client_closed"
            self._entry["closed_at"] = time.monotonic()
            await self._body.aclose()
            if self._plan.cut:
                _cutting.set(True)


async def _pace(next_at: float) -> None:
    wait = next_at - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


class Simulator:
    """The simulator's state: the reply queue and the request log."""

    def __init__(self, *, token_delay_ms: float = 25.0, api_key: str | None = None) -> None:
        self.token_delay_ms = token_delay_ms
        self.api_key = api_key
        self.log: list[LogEntry] = []
        self.open_streams = 0
        self._queue: deque[list[Any]] = deque()  # [reply, uses left]

    def script(self, *replies: Reply | Mapping[str, Any]) -> None:
        """Queue replies; each request pops the next one (a reply with `times: n` serves n)."""
        checked = [check_reply(reply) for reply in replies]
        for reply in checked:
            self._queue.append([reply, reply.get("times", 1)])

    def reset(self) -> None:
        """Forget queued replies and the log."""
        self._queue.clear()
        self.log.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _next_reply(self) -> Reply | None:
        if not self._queue:
            return None
        slot = self._queue[0]
        slot[1] -= 1
        if slot[1] <= 0:
            self._queue.popleft()
        return cast(Reply, slot[0])

    def _new_entry(self, body: Any, authorization: str | None) -> LogEntry:
        entry: LogEntry = {
            "body": body,
            "authorization": authorization,
            "started_at": time.monotonic(),
            "outcome": "open",
            "status": 200,
            "chunks_sent": 0,
            "closed_at": None,
        }
        self.log.append(entry)
        if len(self.log) > _LOG_LIMIT:
            del self.log[: len(self.log) - _LOG_LIMIT]
        return entry

    def authorized(self, authorization: str | None) -> bool:
        return self.api_key is None or authorization == f"Bearer {self.api_key}"

    async def chat_completions(self, raw: bytes, authorization: str | None) -> Response:
        """Answer one `POST /v1/chat/completions`."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        entry = self._new_entry(body, authorization)
        response = await self._answer(body, authorization, entry)
        entry["status"] = response.status_code
        if not isinstance(response, _SimulatedStream):
            entry["closed_at"] = time.monotonic()
            if entry["outcome"] == "open":
                entry["outcome"] = (
                    "completed" if response.status_code == 200 else str(response.status_code)
                )
        return response

    async def _answer(self, body: Any, authorization: str | None, entry: LogEntry) -> Response:
        if not self.authorized(authorization):
            return _unauthorized(authorization)
        if not isinstance(body, dict):
            return _bad_request("We could not parse the JSON body of your request.")
        if not isinstance(body.get("messages"), list):
            return _bad_request("Missing required parameter: 'messages'.", "messages")
        model = body["model"] if isinstance(body.get("model"), str) else _DEFAULT_MODEL
        reply = self._next_reply() or default_reply(body)
        fault = reply.get("fault")
        if fault is not None and fault not in STREAM_FAULTS:
            entry["outcome"] = fault
            return _http_fault(reply, authorization, model)
        plan = self._plan(reply, body, model)
        if body.get("stream") is True:
            return _SimulatedStream(
                self._stream(plan, entry), simulator=self, entry=entry, plan=plan
            )
        return await self._complete(plan, entry)

    def _plan(self, reply: Reply, body: dict[str, Any], model: str) -> _Plan:
        if reply.get("fault") in STREAM_FAULTS and not (
            "content" in reply or "chunks" in reply or "tool_calls" in reply or "stamp" in reply
        ):
            reply = {**reply, "content": _hello(_last_user_text(body))}
        calls = [
            (
                call.get("id") or f"call_{secrets.token_hex(12)}",
                call["name"],
                _fragments(call.get("arguments", "")),
            )
            for call in reply.get("tool_calls", [])
        ]
        content_count = (
            reply.get("count", 20) if reply.get("stamp") else len(_content_chunks(reply))
        )
        completion_tokens = content_count + sum(len(f) for _, _, f in calls)
        usage = {
            "prompt_tokens": _word_count(body),
            "completion_tokens": completion_tokens,
            **reply.get("usage", {}),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        stream_options = body.get("stream_options")
        delay_ms = reply.get("delay_ms", self.token_delay_ms)
        return _Plan(
            reply=reply,
            model=model,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True,
            delay=max(0.0, float(delay_ms)) / 1000,
            usage=usage,
            tool_calls=calls,
        )

    async def _stream(self, plan: _Plan, entry: LogEntry) -> AsyncGenerator[bytes, None]:
        reply = plan.reply
        wire = _Wire(reply.get("wire", {}))
        fault = reply.get("fault")
        deltas = list(_deltas(plan))
        # The fault fires before delta number `at` (-1: before anything, len: before the finish).
        after = reply.get("after_chunks")
        at: int | None = None
        if fault in ("cut", "malformed", "stall"):
            default_after = -1 if fault == "stall" else (3 if fault == "cut" else len(deltas))
            at = min(after if after is not None else default_after, len(deltas))
        finish_reason = reply.get("finish_reason", "tool_calls" if plan.tool_calls else "stop")

        head = (
            '{"id":' + json.dumps(f"chatcmpl-{secrets.token_hex(14)}")
            + ',"object":"chat.completion.chunk","created":' + str(int(time.time()))
            + ',"model":' + _compact(plan.model)
            + ',"service_tier":"default","system_fingerprint":"fp_simulator","choices":'
        )  # fmt: skip
        tail = ',"usage":null}' if plan.include_usage else "}"
        first = True

        def chunk(delta: str, finish: str | None = None) -> str:
            reason = "null" if finish is None else json.dumps(finish)
            return (
                f'{head}[{{"index":0,"delta":{delta},"logprobs":null,'
                f'"finish_reason":{reason}}}]{tail}'
            )

        def frame(payload: str | bytes) -> list[bytes]:
            nonlocal first
            data = payload if isinstance(payload, bytes) else wire.event(payload)
            if wire.comment and not first:
                data = wire.comment.encode() + data
            first = False
            if wire.split and len(data) > 1:
                return [data[: len(data) // 2], data[len(data) // 2 :]]
            return [data]

        if at == -1:
            await asyncio.sleep(float(reply.get("stall_seconds", 60)))
        for part in frame(chunk('{"role":"assistant","content":""}')):
            yield part
        next_at = time.monotonic()
        for index in range(len(deltas) + 1):
            if index == at:
                if fault == "cut":
                    plan.cut = True
                    entry["outcome"] = "cut"
                    return
                if fault == "malformed":
                    for part in frame("{not json"):
                        yield part
                if fault == "stall":
                    await asyncio.sleep(float(reply.get("stall_seconds", 60)))
                    next_at = time.monotonic()
            if index == len(deltas):
                break
            if plan.delay:
                next_at += plan.delay
                await _pace(next_at)
            delta = deltas[index]
            if delta is None:
                delta = '{"content":"' + str(time.monotonic_ns()) + ' "}'
            for part in frame(chunk(delta)):
                yield part
            entry["chunks_sent"] = index + 1
        if fault != "no_finish":
            for part in frame(chunk("{}", finish_reason)):
                yield part
        if plan.include_usage:
            usage = _compact(plan.usage)
            for part in frame(f'{head}[],"usage":{usage}}}'):
                yield part
        for part in frame(wire.done):
            yield part
        entry["outcome"] = fault or "completed"

    async def _complete(self, plan: _Plan, entry: LogEntry) -> Response:
        """A non-streamed `chat.completion` (faults: stall waits, the others shape the body)."""
        reply = plan.reply
        fault = reply.get("fault")
        if fault == "stall":
            await asyncio.sleep(float(reply.get("stall_seconds", 60)))
        if fault in ("malformed", "cut"):
            entry["outcome"] = fault
            truncated = b'{"id": "chatcmpl-x", "choices": [{not json'
            return Response(truncated, media_type="application/json")
        content = "".join(_content_chunks(reply)) if not reply.get("stamp") else None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if plan.tool_calls:
            message["tool_calls"] = [
                {"id": id_, "type": "function", "function": {"name": name, "arguments": "".join(f)}}
                for id_, name, f in plan.tool_calls
            ]
            message["content"] = content or None
        finish = reply.get("finish_reason", "tool_calls" if plan.tool_calls else "stop")
        entry["outcome"] = fault or "completed"
        entry["chunks_sent"] = 0
        return JSONResponse(
            {
                "id": f"chatcmpl-{secrets.token_hex(14)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": plan.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": None if fault == "no_finish" else finish,
                    }
                ],
                "usage": plan.usage,
                "service_tier": "default",
                "system_fingerprint": "fp_simulator",
            }
        )


def _content_chunks(reply: Reply) -> list[str]:
    if "chunks" in reply:
        return list(reply["chunks"])
    return split_words(reply.get("content", ""))


def _deltas(plan: _Plan) -> Iterator[str | None]:
    """Delta JSON texts in order; None means "a stamp", made at the moment it is sent."""
    reply = plan.reply
    if reply.get("stamp"):
        yield from (None for _ in range(reply.get("count", 20)))
    else:
        for text in _content_chunks(reply):
            yield '{"content":' + _compact(text) + "}"
    for index, (call_id, name, fragments) in enumerate(plan.tool_calls):
        function = {"name": name, "arguments": ""}
        call = {"index": index, "id": call_id, "type": "function", "function": function}
        yield _compact({"tool_calls": [call]})
        for fragment in fragments:
            piece = {"index": index, "function": {"arguments": fragment}}
            yield _compact({"tool_calls": [piece]})


def create_simulator(*, token_delay_ms: float = 25.0, api_key: str | None = None) -> FastAPI:
    """A standalone OpenAI-compatible app; `app.state.simulator` is its `Simulator`."""
    simulator = Simulator(token_delay_ms=token_delay_ms, api_key=api_key)
    app = FastAPI(
        title="OpenAI-compatible simulator", openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.simulator = simulator
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _cut_filter not in uvicorn_error.filters:
        uvicorn_error.addFilter(_cut_filter)

    @app.post("/v1/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        return await simulator.chat_completions(raw, request.headers.get("authorization"))

    @app.get("/v1/models", include_in_schema=False)
    async def models(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        if not simulator.authorized(authorization):
            return _unauthorized(authorization)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "sse-chat-agent-simulator"}
            for name in (_DEFAULT_MODEL, "gpt-4.1-mini")
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/_sim/script", include_in_schema=False)
    async def script(request: Request) -> Response:
        try:
            replies = json.loads(await request.body())
            if isinstance(replies, dict):
                replies = [replies]
            if not isinstance(replies, list):
                raise ValueError("send a list of reply objects")
            simulator.script(*replies)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": simulator.queued})

    @app.post("/_sim/reset", include_in_schema=False)
    async def reset() -> Response:
        simulator.reset()
        return JSONResponse({"queued": 0})

    @app.get("/_sim/log", include_in_schema=False)
    async def log() -> Response:
        return JSONResponse(simulator.log)

    return app


def main(argv: list[str] | None = None) -> None:
    """`python -m handlers.simulator`: serve the simulator alone (the benchmark's upstream)."""
    import uvicorn

    parser = argparse.ArgumentParser(description="OpenAI-compatible simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="pace between chunks")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    app = create_simulator(token_delay_ms=args.delay_ms, api_key=args.api_key)
    print(f"simulator: http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=1,  # a scripted stall must not hold up Ctrl-C
    )


if __name__ == "__main__":
    main()
