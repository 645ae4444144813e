"""`make serve` and run.sh: uvicorn on HOST:PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # Started as the server (`make serve`, run.sh on Lambda): the imports and the app built
    # next allocate a few hundred thousand objects that all live as long as the process, and
    # the cyclic GC would walk them again and again (30-40 ms of a cold start). The app's
    # lifespan freezes what startup built and turns the GC back on (handlers.app).
    gc.disable()

import asyncio
import importlib.util
import logging
from functools import partial
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import Settings


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for a new connection's first request head.

    uvicorn times out idle keep-alive connections, but not a new one that sends nothing or
    trickles its request line: thousands of those hold file descriptors and memory until the
    process runs out. uvicorn has no setting for it, hence this subclass; a reverse proxy with
    header timeouts still belongs in front of a public server (README).
    """

    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._head_timeout, self._no_head_in_time)

    def _no_head_in_time(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """Server options the contract depends on.

    h11 refuses request lines over 16 KB with a plain-text error; a prompt up to
    MAX_PROMPT_CHARS in `GET /chat?prompt=` (up to 9 bytes a character once percent-encoded)
    must reach the app, which answers 413 JSON past the limit.
    """
    return {
        "http": partial(HeadTimeoutH11Protocol, head_timeout=settings.header_timeout_seconds),
        # uvloop's event loop took a third off the relay's p99 at 200 streams (make bench).
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # Just what a MAX_PROMPT_CHARS `GET ?prompt=` needs: each slow, unfinished request
        # line holds at most this much memory.
        "h11_max_incomplete_event_size": settings.url_limit,
        # Past this many connections and requests at once, new requests get a 503 instead of
        # memory and file descriptors.
        "limit_concurrency": settings.limit_concurrency,
        # X-Forwarded-For is client-controlled: trusted only from the proxies named here.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": settings.forwarded_allow_ips or None,
        "timeout_graceful_shutdown": 5,
        # The access log would print every `GET /chat?prompt=...`: prompts stay out of logs
        # (one structured line per turn is logged instead).
        "access_log": False,
        # LOG_LEVEL is for the project's loggers: uvicorn's own never go below INFO.
        "log_level": max(_level(settings.log_level), logging.INFO),
    }


def _level(name: str) -> int:
    return logging.getLevelNamesMapping().get(name.upper(), logging.INFO)


def main() -> None:
    settings = Settings()
    host, port = settings.host, settings.port
    if settings.use_simulator:
        print("sse-chat-agent: no OPENAI_API_KEY set, the in-process simulated model answers.")
    print(
        f"sse-chat-agent: open http://{host}:{port}/ (curl -N 'http://{host}:{port}/chat?prompt=hello')"
    )
    from handlers.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port, **uvicorn_options(settings))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
