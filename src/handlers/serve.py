"""`make serve` and run.sh: uvicorn on HOST:PORT (default 127.0.0.1:8000)."""

from __future__ import annotations

import importlib.util
import logging
import os

import uvicorn

from core.settings import Settings


def uvicorn_options(settings: Settings) -> dict[str, object]:
    """Server options the contract depends on.

    h11 refuses request lines over 16 KB with a plain-text error; a prompt up to
    MAX_PROMPT_CHARS in `GET /chat?prompt=` (up to 9 bytes a character once percent-encoded)
    must reach the app, which answers 413 JSON past the limit.
    """
    return {
        "http": "h11",
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
    host = os.environ.get("HOST") or "127.0.0.1"
    port = int(os.environ.get("PORT") or "8000")
    settings = Settings()
    if settings.use_simulator:
        print("sse-chat-agent: no OPENAI_API_KEY set, the in-process simulated model answers.")
    print(
        f"sse-chat-agent: open http://{host}:{port}/ (curl -N 'http://{host}:{port}/chat?prompt=hello')"
    )
    uvicorn.run("handlers.app:app", host=host, port=port, **uvicorn_options(settings))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
