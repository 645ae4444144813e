"""The simulator's SSE bytes and the response that sends them, cut short on purpose if asked."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from simulator.replies import LogEntry, Plan, WireOptions

# Set in the request's context when the simulator drops a connection on purpose ("cut"), so the
# server's "returned without completing response" line for that request is not logged as a bug.
_cutting: contextvars.ContextVar[bool] = contextvars.ContextVar("sim_cutting", default=False)
_UNCOMPLETED = "ASGI callable returned without completing response."


class _DeliberateCutFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cutting.get() and record.getMessage() == _UNCOMPLETED)


_cut_filter = _DeliberateCutFilter()


def quiet_deliberate_cuts() -> None:
    """Keep uvicorn from logging a scripted cut as an application error."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _cut_filter not in uvicorn_error.filters:
        uvicorn_error.addFilter(_cut_filter)


def compact(value: Any) -> str:
    """JSON as OpenAI writes it on the wire: no spaces, raw UTF-8 (clients must decode it)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Wire:
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


class StreamCounter(Protocol):
    open_streams: int


class SimulatedStream(StreamingResponse):
    """A StreamingResponse that records how it ended and can drop the connection mid-body.

    Plain Starlette rather than FastAPI's SSE encoder: the simulator must control every byte
    (CRLF, comment lines, `data:` without a space, non-JSON data, an unterminated body).
    """

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        *,
        counter: StreamCounter,
        entry: LogEntry,
        plan: Plan,
    ) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
        self._body = body
        self._counter = counter
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
        self._counter.open_streams += 1
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._counter.open_streams -= 1
            if self._entry["outcome"] == "open":
                self._entry["outcome"] = "client_closed"
            self._entry["closed_at"] = time.monotonic()
            await self._body.aclose()
            if self._plan.cut:
                _cutting.set(True)
