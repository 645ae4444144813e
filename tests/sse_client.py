"""A small SSE test client: reads our stream over a real socket, with arrival times."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import connect_sse


@dataclass
class Received:
    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    raw_comments: int = 0

    @property
    def tokens(self) -> list[str]:
        return [e["token"] for e in self.events if "token" in e]

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]

    @property
    def session(self) -> str:
        return str(self.events[0]["session"])


def stream_chat(client: httpx.Client, url: str, *, method: str = "GET", **kwargs: Any) -> Received:
    """Run one turn and collect every event; the stream must end by itself."""
    with connect_sse(client, method, url, **kwargs) as source:
        received = Received(source.response.status_code, source.response.headers)
        if source.response.status_code != 200:
            source.response.read()
            received.events.append(source.response.json())
            return received
        for sse in source.iter_sse():
            if not sse.data:  # a comment (": ping") httpx_sse may surface as an empty event
                continue
            received.events.append(json.loads(sse.data))
            received.ids.append(sse.id)
            received.times.append(time.monotonic())
    return received
