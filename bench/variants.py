"""`python -m bench.variants`: the app served with one thing changed, to measure that thing.

Used by `python -m bench.run --variant ...` (never by `make bench`, which measures
`python -m handlers.serve` as shipped). Each option isolates one cost the profile points at:

- `--sse plain`: `GET /chat` answered by a plain Starlette `StreamingResponse` of pre-encoded
  events (same core turn, same `to_sse` payloads, same bytes on the wire, no keep-alive pings)
  instead of FastAPI's native SSE path (a producer task, two memory streams, a cancel scope and
  a checkpoint per event). The difference is the native path's share.
- `--http httptools`, `--loop uvloop`: uvicorn's C parser and event loop (install them first:
  see docs/bench.md; the shipped server uses h11 and the asyncio loop).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.sse import format_sse_event
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from core.chat import TurnLimits, TurnRequest, begin_turn
from core.settings import Settings
from core.tools import builtin_registry
from handlers.app import create_app
from handlers.serve import uvicorn_options
from handlers.sse import payload


def plain_sse(app: FastAPI, settings: Settings) -> None:
    """Put a plain-StreamingResponse `GET /chat` in front of the app's own route."""
    limits = TurnLimits(
        max_prompt_chars=settings.max_prompt_chars,
        history_messages=settings.history_messages,
        max_tool_steps=settings.max_tool_steps,
        tool_timeout_seconds=settings.tool_timeout_seconds,
        turn_timeout_seconds=settings.turn_timeout_seconds,
    )
    tools = builtin_registry(settings.tool_names)

    async def chat(request: Request) -> Response:
        turn = await begin_turn(
            TurnRequest(prompt=request.query_params.get("prompt", "")),
            model=app.state.model,
            sessions=app.state.sessions,
            tools=tools,
            limits=limits,
        )

        async def body() -> AsyncIterator[bytes]:
            seq = 0
            async for event in turn.events():
                seq += 1
                data = json.dumps(payload(event), ensure_ascii=False)
                yield format_sse_event(data_str=data, id=str(seq))

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    app.router.routes.insert(0, Route("/chat", chat, methods=["GET"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sse", choices=["native", "plain"], default="native")
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    settings = Settings()
    app = create_app(settings)
    if args.sse == "plain":
        plain_sse(app, settings)
    options = {**uvicorn_options(settings), "http": args.http, "loop": args.loop}
    if args.http != "h11":
        options.pop("h11_max_incomplete_event_size", None)
    host = os.environ.get("HOST") or "127.0.0.1"
    uvicorn.run(app, host=host, port=int(os.environ["PORT"]), **options)


if __name__ == "__main__":
    main()
