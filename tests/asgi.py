"""Driving the app as an ASGI server would, without a socket: a GET scope and a `receive`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def get_scope(path: str, query: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5),
        "server": ("test", 80),
    }


def request_then_disconnect_on(gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """`receive`: the (empty) request once, then `http.disconnect` when `gone` is set.

    Every call after the first waits, as a real server's does: a `receive` that returned at
    once would spin the app's disconnect watcher and starve the event loop.
    """
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive
