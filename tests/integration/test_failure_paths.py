"""Failure paths at the edges: a client gone mid-send, a hung or misbehaving provider, odd keys.

Each test names the failure it guards against."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from core.errors import StoreError
from core.quota.memory import InProcessRateLimiter
from core.sessions.memory import MemorySessionStore
from core.settings import Settings
from handlers.app import create_app
from handlers.container import Secrets, build_services
from tests.asgi import get_scope, request_then_disconnect_on
from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.fakes import FakeModel, Step
from tests.sse_client import stream_chat


async def test_a_client_gone_mid_send_leaves_the_turn_to_finish_and_free_the_session() -> None:
    """GIVEN the client vanishes while a token is being written (send raises, then disconnect)
    THEN the turn goes on to its end (DESIGN §8 "Disconnect"): the whole reply is stored as
    complete, and the lease is free once the response returns."""
    store = MemorySessionStore()
    model = FakeModel([Step(tokens=["a", "b", "c", "d"])])
    settings = Settings(session_store="memory")
    app = create_app(settings, services=build_services(settings, model=model, sessions=store))
    gone = asyncio.Event()
    bodies: list[bytes] = []
    receive = request_then_disconnect_on(gone)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if len(bodies) == 3:  # retry:, started and the first token went out
                gone.set()
                raise OSError("connection reset")

    await app(get_scope("/chat", b"prompt=hi"), receive, send)  # type: ignore[arg-type]
    session = json.loads(b"".join(bodies).decode().split("data: ")[1].split("\n")[0])["session"]
    loaded = await store.load(session, now=time.time())
    assert [(m.role, m.content, m.status) for m in loaded.messages] == [
        ("user", "hi", "complete"),
        ("assistant", "abcd", "complete"),
    ]
    await store.lock(session, owner="next", now=time.time(), lease_seconds=5)  # not busy


@pytest.fixture
def silent_upstream() -> Any:
    """A server that accepts connections and never answers (a provider hung before headers)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_provider_hung_before_its_headers_times_out(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, silent_upstream: str
) -> None:
    settings = settings_for(
        simulator, openai_base_url=silent_upstream, first_token_timeout_seconds=0.5
    )
    start = time.monotonic()
    got = stream_chat(http, f"{live_app(settings).url}/chat", params={"prompt": "hi"})
    assert got.last == {"error": "the model provider did not start answering in time"}
    assert time.monotonic() - start < 3


def test_a_provider_answering_json_instead_of_a_stream_is_a_clear_error(
    live_app: AppFactory, simulator: SimulatorServer, http: httpx.Client
) -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.conftest import LiveServer

    async def not_a_stream(_: Any) -> JSONResponse:
        return JSONResponse({"id": "x", "choices": []})

    upstream = Starlette(routes=[Route("/v1/chat/completions", not_a_stream, methods=["POST"])])
    with LiveServer(upstream) as server:
        url = live_app(settings_for(simulator, openai_base_url=f"{server.url}/v1")).url
        got = stream_chat(http, f"{url}/chat", params={"prompt": "hi"})
    assert got.last == {"error": "the model provider did not answer with an event stream"}
    messages = http.get(f"{url}/sessions/{got.session}").json()["messages"]
    assert messages[-1]["status"] == "failed"


def test_the_session_is_free_as_soon_as_done_arrives(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["one"]}, {"chunks": ["two"]})
    with httpx.stream("GET", f"{app_url}/chat", params={"prompt": "a"}, timeout=10) as resp:
        session = ""
        for line in resp.iter_lines():
            if '"session"' in line:
                session = json.loads(line[len("data: ") :])["session"]
            if '"done"' in line:
                # WHEN the next prompt goes out the moment `done` is read
                with httpx.Client(timeout=10) as other:
                    nxt = stream_chat(
                        other, f"{app_url}/chat", params={"prompt": "b", "session": session}
                    )
                break
    # THEN it is accepted, never 409
    assert nxt.status == 200 and nxt.text == "two"


def test_a_failing_token_count_after_done_still_closes_the_stream_cleanly(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    class BrokenSpend(InProcessRateLimiter):
        async def spend(self, client: str, tokens: int, *, now: float) -> None:
            raise StoreError("session store is busy; try again")

    url = live_app(
        settings_for(simulator), rate_limiter=BrokenSpend(per_minute=0, daily_tokens=100)
    ).url
    got = stream_chat(http, f"{url}/chat", params={"prompt": "hi"})
    assert got.last["lifecycle"] == "done"
    assert sum("lifecycle" in e and e["lifecycle"] == "done" for e in got.events) == 1


def test_a_made_up_bearer_key_does_not_dodge_the_rate_limit(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, rate_limit_per_minute=2)).url
    window = int(time.time() // 60)
    statuses = [
        http.get(
            f"{url}/chat", params={"prompt": "hi"}, headers={"Authorization": f"Bearer r{i}"}
        ).status_code
        for i in range(3)
    ]
    if int(time.time() // 60) != window:
        pytest.skip("the requests straddled a minute boundary; the window restarted")
    assert statuses == [200, 200, 429]


def test_a_retry_after_longer_than_we_wait_fails_at_once(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "429", "retry_after": 30}, {"chunks": ["never"]})
    start = time.monotonic()
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    assert "rate limiting" in got.last["error"]
    assert len(simulator.log) == 1
    assert time.monotonic() - start < 5


def test_an_access_key_secret_that_resolves_empty_fails_closed(
    simulator: SimulatorServer,
    live_app: AppFactory,
    http: httpx.Client,
) -> None:
    async def empty_secret(secret_id: str) -> str:
        return ""

    settings = settings_for(simulator, access_key_secret="arn:example")
    url = live_app(settings, secrets=Secrets(settings, read=empty_secret)).url
    response = http.get(f"{url}/chat", params={"prompt": "hi"})
    assert response.status_code == 401
    assert simulator.log == []


def test_an_empty_access_key_setting_means_no_key() -> None:
    assert Settings(access_key="").access_key is None
    assert Settings(openai_api_key=" ").openai_api_key is None
