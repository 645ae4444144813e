"""Run scripted turns through the app in this (child) process, without sockets.

`python -m tests.unit.telemetry_child RESULTS.json [LOG_LEVEL]` drives the real app (OpenAI
adapter and simulator joined by httpx's ASGI transport), writes what the client saw to RESULTS.json,
so this process's stdout/stderr hold only what the app and its libraries logged.
A fresh process per run: logging and Powertools are configured exactly once, as in production.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx

from core.sessions.memory import MemorySessionStore
from core.settings import Settings
from handlers.app import create_app
from handlers.container import build_services
from handlers.openai_model import Model
from simulator import create_simulator

OPENAI_KEY = "sk-canary-OPENAI-7f3a9c1e5b2d4806"
ACCESS_KEY = "ak-canary-ACCESS-0e9d8c7b6a5f4e3d"
PROMPT = "PROMPT-CANARY-purple-walrus-4711"
LAMBDA_REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e812345678"
TOKENS = [f"t{i} " for i in range(20)]


async def run(log_level: str) -> list[dict[str, Any]]:
    simulator = create_simulator(token_delay_ms=0, api_key=OPENAI_KEY)
    sim = simulator.state.simulator
    settings = Settings(
        openai_api_key=OPENAI_KEY,
        openai_base_url="http://simulator/v1",
        openai_model="canary-model",
        access_key=ACCESS_KEY,
        session_store="memory",
        rate_limit_per_minute=0,
        log_level=log_level,
    )

    async def key() -> str:
        return OPENAI_KEY

    upstream = httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator))
    model = Model(
        upstream, base_url="http://simulator/v1", model="canary-model", api_key=key, max_tokens=64
    )
    services = build_services(settings, model=model, sessions=MemorySessionStore())
    app = create_app(settings, services=services)
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app"
    ) as client:

        async def call(name: str, method: str, url: str, **kwargs: Any) -> None:
            response = await client.request(method, url, **kwargs)
            events = [
                json.loads(line.removeprefix("data: "))
                for line in response.text.split("\n")
                if line.startswith("data: ")
            ]
            results.append({"name": name, "status": response.status_code, "events": events})

        # 1. A good turn of 20 tokens, key in the query (EventSource), Lambda's request context.
        sim.script({"chunks": TOKENS, "usage": {"prompt_tokens": 9, "completion_tokens": 20}})
        context = json.dumps({"requestId": LAMBDA_REQUEST_ID, "http": {"sourceIp": "203.0.113.9"}})
        await call(
            "good",
            "GET",
            "/chat",
            params={"prompt": PROMPT, "key": ACCESS_KEY},
            headers={"x-amzn-request-context": context},
        )
        # 2. The provider rejects the API key (its error body is where keys tend to leak).
        sim.script({"fault": "401"})
        await call(
            "upstream_401",
            "POST",
            "/chat",
            json={"prompt": PROMPT},
            headers={"authorization": f"Bearer {ACCESS_KEY}", "x-request-id": "req-401"},
        )
        # 3. A wrong access key and a bad request: refused before any turn, no turn line.
        await call("wrong_key", "GET", "/chat", params={"prompt": PROMPT, "key": "nope"})
        await call(
            "bad_body",
            "POST",
            "/chat",
            content=b"{",
            headers={"authorization": f"Bearer {ACCESS_KEY}", "content-type": "application/json"},
        )
    await upstream.aclose()
    return results


def main() -> None:
    results = asyncio.run(run(sys.argv[2] if len(sys.argv) > 2 else "INFO"))
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main()
