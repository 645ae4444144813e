"""The wire format: the only place that knows how core events look on the SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import anyio
from fastapi.sse import KEEPALIVE_COMMENT, format_sse_event
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from core.events import Done, Event, Failed, Started, Token, ToolCallStarted, ToolResult

_SURROGATE = re.compile("[\ud800-\udfff]")
# One encoder for the process: json.dumps(..., ensure_ascii=False) builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
_ENCODE_ASCII = json.JSONEncoder().encode


def payload(event: Event) -> dict[str, Any]:
    """The JSON object one event carries (DESIGN §4)."""
    match event:
        case Token(text=text):
            return {"token": text}
        case Started(session=session, model=model, simulated=simulated):
            started: dict[str, Any] = {"lifecycle": "started", "session": session, "model": model}
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
            return {
                "lifecycle": "done",
                "finish_reason": reason,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                },
            }
    raise TypeError(f"not an event: {event!r}")


def encode_data(event: Event) -> str:
    """The event's JSON text: one line (JSON escapes every newline), valid UTF-8."""
    data = _ENCODE(payload(event))
    if not data.isascii() and _SURROGATE.search(data):
        # A lone surrogate (a model may send `\ud800` in its JSON) cannot be UTF-8 encoded:
        # escape it instead, so the wire stays valid and JSON.parse gets the same string.
        data = _ENCODE_ASCII(payload(event))
    return data


def to_sse(event: Event, seq: int) -> bytes:
    """One unnamed SSE message (`onmessage` sees it) with a strictly increasing `id`."""
    return format_sse_event(data_str=encode_data(event), id=str(seq))


class SSEResponse(StreamingResponse):
    """An SSE stream of pre-encoded events, with keep-alive pings and disconnect detection.

    FastAPI's generator endpoints (`response_class=EventSourceResponse` + `yield`) run a
    producer task, two memory streams and a timeout per event; measured by `make bench`, that
    was half the relay's CPU per token. Here each event is one `send`, and one timer per
    stream sends `: ping` after `heartbeat` seconds of silence (slow first token, slow tool).
    A client that goes away cancels the stream at once, even while nothing is being sent.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], *, heartbeat: float) -> None:
        super().__init__(events, headers=_STREAM_HEADERS)
        self._events = events
        self._heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        last_sent = loop.time()

        async def send_locked(message: Message) -> None:
            nonlocal last_sent
            async with lock:
                await send(message)
            last_sent = loop.time()

        async def keep_alive() -> None:
            while True:
                idle = loop.time() - last_sent
                if idle < self._heartbeat:
                    await anyio.sleep(self._heartbeat - idle)
                    continue
                await send_locked(
                    {"type": "http.response.body", "body": KEEPALIVE_COMMENT, "more_body": True}
                )

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(watch_disconnect, group.cancel_scope)
            group.start_soon(keep_alive)
            try:
                # OSError: the client went away mid-write, there is nothing left to tell it.
                with contextlib.suppress(OSError):
                    await self.stream_response(send_locked)
            finally:
                # Cancelled while sending, the events generator sits at a `yield`: close it
                # now, so the turn stores its reply and frees the session at once.
                with anyio.CancelScope(shield=True):
                    await self._events.aclose()
            group.cancel_scope.cancel()


_STREAM_HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
