"""The wire format: the only place that knows how core events look on the SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, assert_never

import anyio
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from core.events import (
    Done,
    Event,
    Failed,
    Reasoning,
    Started,
    Token,
    ToolCallStarted,
    ToolResult,
)

logger = logging.getLogger("sse_chat_agent")
_SURROGATE = re.compile("[\ud800-\udfff]")
# One encoder for the process: json.dumps(..., ensure_ascii=False) builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
_ENCODE_ASCII = json.JSONEncoder().encode


def payload(event: Event) -> dict[str, Any]:
    """The JSON object one event carries (DESIGN §4)."""
    match event:
        case Token(text=text):
            return {"token": text}
        case Reasoning(text=text):
            return {"reasoning": text}
        case Started(session=session, model=model, simulated=simulated, turn=turn):
            started: dict[str, Any] = {"lifecycle": "started", "session": session}
            if turn:
                started["turn"] = turn
            started["model"] = model
            if simulated:
                started["simulated"] = True
            return started
        case ToolCallStarted(id=call_id, name=name):
            return {"tool_call": {"id": call_id, "name": name}}
        case ToolResult(id=call_id, name=name, ok=ok, output=output):
            return {"tool_result": {"id": call_id, "name": name, "ok": ok, "output": output}}
        case Failed(message=message):
            return {"error": message}
        case Done(finish_reason=reason, usage=usage):
            counts: dict[str, int] = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
            }
            if usage.reasoning_tokens is not None:
                counts["reasoning_tokens"] = usage.reasoning_tokens
            usage_out: dict[str, int | bool] = dict(counts)
            if usage.estimated:
                usage_out["estimated"] = True
            return {"lifecycle": "done", "finish_reason": reason, "usage": usage_out}
        case _:
            assert_never(event)


def encode_data(event: Event) -> str:
    """The event's JSON text: one line (JSON escapes every newline), valid UTF-8."""
    data = _ENCODE(payload(event))
    if not data.isascii() and _SURROGATE.search(data):
        # A lone surrogate (a model may send `\ud800` in its JSON) cannot be UTF-8 encoded:
        # escape it instead, so the wire stays valid and JSON.parse gets the same string.
        data = _ENCODE_ASCII(payload(event))
    return data


def to_sse(event: Event, event_id: str) -> bytes:
    """One unnamed SSE message (`onmessage` sees it) with its `id` (see `event_id`)."""
    return format_sse_event(data_str=encode_data(event), id=event_id)


_EVENT_ID = re.compile(r"([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{1,64})\.([0-9]{1,9})")


def event_id(session_id: str, turn_id: str, position: int) -> str:
    """`<session>.<turn>.<position>`: URL-safe, unique within the session, and enough to find
    the turn from a reconnect whose URL names no session. Clients never parse it."""
    return f"{session_id}.{turn_id}.{position}"


def parse_event_id(text: str) -> tuple[str, str, int] | None:
    """`(session, turn, position)` of an id `event_id` made; None for anything else."""
    match = _EVENT_ID.fullmatch(text.strip())
    if match is None:
        return None
    return match[1], match[2], int(match[3])


class SSEResponse(StreamingResponse):
    """An SSE stream of pre-encoded events, with keep-alive pings and a send deadline.

    FastAPI's generator endpoints (`response_class=EventSourceResponse` + `yield`) run a
    producer task, two memory streams and a timeout per event; measured by `make bench`, that
    was half the relay's CPU per token. Here each event is one `send`, and one timer per
    stream sends `: ping` after `heartbeat` seconds of silence (slow first token, slow tool).

    The response is a reader only: the turn runs in a task of its own. A client that goes away
    ends the reading at once; one that stops reading is dropped once a send has been blocked
    for `send_timeout` seconds (a watchdog checks; no timer is armed per send). `linger`, if
    given, is awaited before the response returns, whatever happened to the client: the
    request that started a turn stays open until the turn ends, because on Lambda the
    invocation (and so the turn) is frozen the moment its response ends.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        *,
        heartbeat: float,
        send_timeout: float,
        linger: Callable[[], Awaitable[None]] | None = None,
        retry_ms: int | None = None,
    ) -> None:
        super().__init__(events, headers=_STREAM_HEADERS)
        self._events = events
        self._heartbeat = heartbeat
        self._send_timeout = send_timeout
        self._linger = linger
        self._retry = f"retry: {retry_ms}\n\n".encode() if retry_ms else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        last_sent = loop.time()
        sending_since: float | None = None
        dropped = False

        async def send_locked(message: Message) -> None:
            nonlocal last_sent, sending_since
            async with lock:
                sending_since = loop.time()
                await send(message)
                sending_since = None
            last_sent = loop.time()

        async def keep_alive() -> None:
            while True:
                idle = loop.time() - last_sent
                if idle < self._heartbeat:
                    await anyio.sleep(self._heartbeat - idle)
                    continue
                await send_locked(_body(KEEPALIVE_COMMENT))

        async def watchdog(group: anyio.CancelScope) -> None:
            nonlocal dropped
            while True:
                await anyio.sleep(self._send_timeout / 4)
                if sending_since is not None and loop.time() - sending_since >= self._send_timeout:
                    dropped = True
                    group.cancel()
                    return

        async def watch_disconnect(group: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel()

        async def respond(group: anyio.CancelScope) -> None:
            # OSError: the client went away mid-write, there is nothing left to tell it.
            with contextlib.suppress(OSError):
                await send_locked(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                if self._retry:
                    await send_locked(_body(self._retry))
                async for chunk in self._events:
                    await send_locked(_body(chunk))
                await send_locked({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(watch_disconnect, group.cancel_scope)
                group.start_soon(watchdog, group.cancel_scope)
                group.start_soon(keep_alive)
                group.start_soon(respond, group.cancel_scope)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()
                if self._linger is not None:
                    await self._linger()
        if dropped:
            # The response cannot be completed (the client is not reading); returning closes
            # the connection, which is the point. Say so once, instead of the server's error.
            _dropping.set(True)
            logger.info("dropped a client that stopped reading for %g s", self._send_timeout)


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


_STREAM_HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# Set in the request's context when a client that stopped reading is dropped on purpose, so the
# server's "returned without completing response" line for that request is not logged as a bug.
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("sse_dropping", default=False)
_UNCOMPLETED = "ASGI callable returned without completing response."


class DroppedClientFilter(logging.Filter):
    """Hides uvicorn's error line for a response this module ended on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_dropping.get() and record.getMessage() == _UNCOMPLETED)
