"""Abuse fails safely: stuck sessions, stalled readers, huge bodies, floods, spoofed headers,
shared budgets, odd input.

Every test replays the attack over a real socket and shows the safe outcome.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.sessions.memory import MemorySessionStore
from core.sessions.sqlite import SQLiteSessionStore
from core.settings import Settings
from handlers.app import create_app
from handlers.container import build_services
from tests.asgi import get_scope, request_then_disconnect_on
from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.fakes import FakeModel, Step
from tests.sse_client import stream_chat
from tests.store_fixtures import fresh_table


def _session_of(line: str) -> str:
    return str(json.loads(line.removeprefix("data: "))["session"])


def close_at_the_last_token(url: str, prompt: str, session: str | None, tokens: int) -> str:
    """Read a turn until its last token, then close the connection before `done` arrives."""
    params = {"prompt": prompt} | ({"session": session} if session else {})
    seen = 0
    with httpx.stream("GET", f"{url}/chat", params=params, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"lifecycle": "started"' in line:
                session = _session_of(line)
            elif line.startswith('data: {"token"'):
                seen += 1
                if seen == tokens:
                    break
    assert session is not None
    return session


def next_turn_status(http: httpx.Client, url: str, session: str, *, within: float) -> int:
    """The status of a new turn on `session`, retrying a 409 for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        response = http.post(f"{url}/chat", json={"prompt": "next", "session": session})
        if response.status_code != 409 or time.monotonic() > deadline:
            return response.status_code
        time.sleep(0.05)


@pytest.fixture
def dynamodb_table(monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_table(monkeypatch)


# --- 4. leases --------------------------------------------------------------------------------


@pytest.mark.parametrize(("store", "rounds"), [("sqlite", 20), ("dynamodb", 5)])
def test_closing_the_stream_at_the_last_token_never_leaves_the_session_locked(
    simulator: SimulatorServer,
    live_app: AppFactory,
    http: httpx.Client,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    store: str,
    rounds: int,
) -> None:
    """Reproduced: 89 of 100 next turns got 409 for 150 s (SQLite), 29 of 30 on DynamoDB."""
    extra: dict[str, Any] = {"sqlite_path": str(tmp_path / "s.db")}
    if store == "dynamodb":
        extra = {"sessions_table": request.getfixturevalue("dynamodb_table")}
    url = live_app(settings_for(simulator, session_store=store, **extra)).url
    chunks = ["one ", "two ", "three"]
    simulator.sim.script({"chunks": chunks, "times": 2 * rounds + 1})
    session: str | None = None
    statuses = []
    for _ in range(rounds):
        session = close_at_the_last_token(url, "go", session, tokens=len(chunks))
        statuses.append(next_turn_status(http, url, session, within=2.0))
    assert statuses == [200] * rounds


def test_a_full_disk_mid_turn_fails_the_turn_and_leaves_no_lasting_409(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, tmp_path: Path
) -> None:
    """GIVEN SQLite whose disk fills up after the user message was stored (max_page_count)
    THEN the turn ends with `{"error"}`, and once the disk has room the session takes turns."""
    store = SQLiteSessionStore(tmp_path / "full.db")
    url = live_app(settings_for(simulator), sessions=store).url
    simulator.sim.script({"chunks": ["x"] * 3}, {"chunks": ["x" * 2000] * 40}, {"chunks": ["ok"]})
    first = stream_chat(http, f"{url}/chat", params={"prompt": "warm up"})
    db = store._connection()  # the app's own connection: its next growth finds the disk full
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages + 2}")
    got = stream_chat(http, f"{url}/chat", params={"prompt": "big", "session": first.session})
    assert set(got.last) == {"error"}, got.last
    assert "could not be saved" in got.last["error"]
    db.execute("PRAGMA max_page_count = 1073741823")  # room again
    assert next_turn_status(http, url, first.session, within=2.0) == 200


# --- 5. clients that stop reading ---------------------------------------------------------------


def test_a_client_that_stops_reading_cannot_hold_its_turn(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: a client that stopped reading held its turn (and an upstream connection)
    until it left, past TURN_TIMEOUT_SECONDS. Now the turn runs on without it, is stored and
    the session is free while the client still has not read a byte."""
    url = live_app(settings_for(simulator, send_timeout_seconds=1.0)).url
    big = ["y" * 100] * 3000  # 300 KB of text, 400 KB of events: more than socket buffers hold
    simulator.sim.script({"chunks": big}, {"chunks": ["next"]})
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = url.removeprefix("http://").split(":")
    client.connect((host, int(port)))
    client.sendall(f"GET /chat?prompt=big HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    started = time.monotonic()
    try:
        # The turn finishes upstream although nobody reads...
        while (
            not simulator.log or simulator.log[0]["outcome"] == "open"
        ) and time.monotonic() - started < 15:
            time.sleep(0.05)
        assert simulator.log[0]["outcome"] == "completed"
        client.settimeout(10)
        head = client.recv(4096)
        while b'"session": "' not in head:
            head += client.recv(4096)
        session = head.split(b'"session": "')[1].split(b'"')[0].decode()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            messages = http.get(f"{url}/sessions/{session}").json()["messages"]
            if len(messages) == 2:
                break
            time.sleep(0.05)
        assert (messages[-1]["content"], messages[-1]["status"]) == ("".join(big), "complete")
        got = stream_chat(http, f"{url}/chat", params={"prompt": "again", "session": session})
        assert got.text == "next"
    finally:
        client.close()


async def test_a_send_blocked_for_send_timeout_drops_that_client_and_not_the_turn() -> None:
    """GIVEN a client whose socket stopped taking data (uvicorn's `send` waits on the
    transport's drain, forever) THEN the response gives up within SEND_TIMEOUT_SECONDS (plus
    the watchdog's quarter period) while the turn runs to its end and is stored."""
    store = MemorySessionStore()
    model = FakeModel([Step(tokens=["a", "b", "c"], delay=0.1)])
    settings = Settings(session_store="memory", send_timeout_seconds=0.4)
    app = create_app(settings, services=build_services(settings, model=model, sessions=store))
    sent: list[bytes] = []
    never = asyncio.Event()
    receive = request_then_disconnect_on(never)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"data:" in message["body"]:
            sent.append(message["body"])
            if len(sent) > 1:
                await never.wait()  # the client stopped reading

    started = time.monotonic()
    await asyncio.wait_for(app(get_scope("/chat", b"prompt=hi"), receive, send), timeout=5)
    assert time.monotonic() - started < 0.4 * 1.25 + 0.5
    session = json.loads(sent[0].decode().split("data: ")[1].split("\n")[0])["session"]
    loaded = await store.load(session, now=time.time())
    assert [(m.content, m.status) for m in loaded.messages] == [
        ("hi", "complete"),
        ("abc", "complete"),
    ]


# --- 6. bodies --------------------------------------------------------------------------------


def raw_exchange(url: str, head: bytes, timeout: float = 5.0) -> bytes:
    """Send `head` (and nothing more), return the whole answer until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
    return b"".join(chunks)


def test_a_huge_body_is_refused_413_before_it_is_sent(
    simulator: SimulatorServer, live_app: AppFactory
) -> None:
    """Reproduced: four 400 MB POSTs peaked RSS at 3.26 GB. Now the declared length alone
    gets a JSON 413: the server answers without reading a byte of the body."""
    url = live_app(settings_for(simulator)).url
    head = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 400000000\r\n\r\n"
    )
    answer = raw_exchange(url, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"application/json" in answer and b"request body is larger than" in answer
    assert simulator.log == []


def test_a_chunked_body_over_the_limit_is_refused_413(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, max_body_bytes=4096)).url

    def chunks() -> Any:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"z" * 1000
        yield b'"}'

    response = http.post(
        f"{url}/chat", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "larger than 4096" in response.json()["error"]
    small = http.post(f"{url}/chat", json={"prompt": "fits"})
    assert small.status_code == 200


def test_without_the_access_key_the_body_is_never_read(
    simulator: SimulatorServer, live_app: AppFactory
) -> None:
    """Reproduced: a 52 MB JSON body with 3 million keys froze every stream for 3.7 s before
    its 401. Now the key is checked first: 401 at once, with no body sent at all."""
    url = live_app(settings_for(simulator, access_key="the-right-key-1234")).url
    head = (
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 150000\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_exchange(url, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"access key is required" in answer
    assert time.monotonic() - started < 2


# --- 7. floods --------------------------------------------------------------------------------


def test_past_limit_concurrency_new_requests_get_503(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # uvicorn counts the new connection itself: a limit of 4 serves 3.
    url = live_app(settings_for(simulator, limit_concurrency=4)).url
    simulator.sim.script({"chunks": ["slow"] * 30, "delay_ms": 100, "times": 3})
    opened = []
    try:
        for _ in range(3):
            stream = httpx.stream("GET", f"{url}/chat", params={"prompt": "hold"}, timeout=10)
            response = stream.__enter__()
            assert response.status_code == 200
            opened.append(stream)
        refused = http.get(f"{url}/healthz")
        assert refused.status_code == 503
    finally:
        for stream in opened:
            stream.__exit__(None, None, None)


def test_an_unfinished_request_line_is_bounded_by_what_a_long_prompt_needs(
    simulator: SimulatorServer, live_app: AppFactory
) -> None:
    """Reproduced: 800 connections each sending a 1 MB unfinished request line took RSS from
    86 to 840 MB. The server now buffers only what a MAX_PROMPT_CHARS `GET ?prompt=` needs
    (here 100 characters: about 17 KB) and refuses a longer line."""
    url = live_app(settings_for(simulator, max_prompt_chars=100)).url
    line = b"GET /chat?prompt=" + b"a" * (64 * 1024)  # never finished
    answer = raw_exchange(url, line)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]


# --- 8. identity ------------------------------------------------------------------------------


def test_off_lambda_a_clients_lambda_context_header_is_ignored(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: `{"deadline": NaN}` in x-amzn-lambda-context disabled the deadline. Off
    Lambda the header is not trusted; on Lambda a NaN is refused as a deadline."""
    for on_lambda in (None, "sse-chat-agent-test"):
        settings = settings_for(
            simulator, turn_timeout_seconds=1.0, aws_lambda_function_name=on_lambda
        )
        url = live_app(settings).url
        simulator.sim.script({"chunks": [f"{i} " for i in range(60)], "delay_ms": 50})
        started = time.monotonic()
        got = stream_chat(
            http,
            f"{url}/chat",
            params={"prompt": "long"},
            headers={"x-amzn-lambda-context": '{"deadline": NaN}'},
        )
        assert got.last == {"error": "time limit reached"}
        assert time.monotonic() - started < 2.5


def test_x_forwarded_for_is_trusted_only_from_configured_proxies(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: X-Forwarded-For from loopback was trusted, so one client could rotate the
    header past the per-client limit."""
    simulator.sim.script({"chunks": ["ok"], "times": 10})
    closed = live_app(settings_for(simulator, rate_limit_per_minute=1)).url
    statuses = [
        http.post(
            f"{closed}/chat", json={"prompt": "hi"}, headers={"x-forwarded-for": f"198.51.100.{i}"}
        ).status_code
        for i in range(2)
    ]
    assert statuses == [200, 429]
    proxied = live_app(
        settings_for(simulator, rate_limit_per_minute=1, forwarded_allow_ips="127.0.0.1")
    ).url
    statuses = [
        http.post(
            f"{proxied}/chat", json={"prompt": "hi"}, headers={"x-forwarded-for": f"198.51.100.{i}"}
        ).status_code
        for i in range(2)
    ]
    assert statuses == [200, 200]


def test_the_global_daily_token_budget_refuses_every_client_once_spent(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, global_daily_token_quota=30)).url
    simulator.sim.script({"chunks": ["a"], "usage": {"prompt_tokens": 20, "completion_tokens": 15}})
    assert stream_chat(http, f"{url}/chat", params={"prompt": "spend"}).last["lifecycle"] == "done"
    refused = http.get(
        f"{url}/chat", params={"prompt": "more"}, headers={"x-forwarded-for": "1.2.3.4"}
    )
    assert refused.status_code == 429 and "daily token budget" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) > 0


def test_the_global_daily_token_budget_is_shared_in_dynamodb(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, dynamodb_table: str
) -> None:
    settings = settings_for(
        simulator,
        session_store="dynamodb",
        sessions_table=dynamodb_table,
        global_daily_token_quota=30,
    )
    first, second = live_app(settings).url, live_app(settings).url  # two Lambda instances
    simulator.sim.script({"chunks": ["a"], "usage": {"prompt_tokens": 20, "completion_tokens": 15}})
    assert stream_chat(http, f"{first}/chat", params={"prompt": "x"}).last["lifecycle"] == "done"
    refused = http.get(f"{second}/chat", params={"prompt": "more"})
    assert refused.status_code == 429 and "daily token budget" in refused.json()["error"]


# --- 8. the small ones ------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_lone_surrogate_in_a_new_sessions_prompt_is_a_400(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, tmp_path: Path, store: str
) -> None:
    url = live_app(
        settings_for(simulator, session_store=store, sqlite_path=str(tmp_path / "s.db"))
    ).url
    body = b'{"prompt": "hi \\ud800 there"}'
    response = http.post(f"{url}/chat", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid Unicode" in response.json()["error"]
    assert simulator.log == []


def test_a_lone_surrogate_on_dynamodb_is_a_400_not_a_503(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, dynamodb_table: str
) -> None:
    url = live_app(
        settings_for(simulator, session_store="dynamodb", sessions_table=dynamodb_table)
    ).url
    body = b'{"prompt": "\\udfff"}'
    response = http.post(f"{url}/chat", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_too_many_tool_calls_in_one_step_end_with_a_clear_error(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: 99+ tool calls in one step ended in "internal error"."""
    url = live_app(settings_for(simulator)).url
    calls = [{"name": "calculator", "arguments": '{"expression": "1+1"}'}] * 120
    simulator.sim.script({"tool_calls": calls})
    got = stream_chat(http, f"{url}/chat", params={"prompt": "many"})
    assert "more than 16 tool calls in one step" in got.last["error"]
    assert not any("tool_result" in e for e in got.events)
    assert http.post(f"{url}/chat", json={"prompt": "ok", "session": got.session}).status_code in (
        200,
    )


def test_a_reply_over_the_item_limit_is_stored_cut_short_as_failed(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: a reply over 350 KB streamed, then nothing at all was stored."""
    url = live_app(settings_for(simulator)).url
    simulator.sim.script({"chunks": ["w" * 10_000] * 40})  # 400 KB
    got = stream_chat(http, f"{url}/chat", params={"prompt": "a lot"})
    assert "limit of a stored message" in got.last["error"]
    stored = http.get(f"{url}/sessions/{got.session}").json()["messages"][-1]
    assert stored["status"] == "failed"
    assert len(stored["content"]) == 350_000 and got.text.startswith(stored["content"])


def test_docs_are_off_and_the_schema_is_behind_the_access_key(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, access_key="k-0123456789")).url
    assert http.get(f"{url}/docs").status_code == 404
    assert http.get(f"{url}/redoc").status_code == 404
    assert http.get(f"{url}/openapi.json").status_code == 401
    schema = http.get(f"{url}/openapi.json", headers={"authorization": "Bearer k-0123456789"})
    assert schema.status_code == 200 and "/chat" in schema.json()["paths"]


def test_head_is_answered(simulator: SimulatorServer, app_url: str, http: httpx.Client) -> None:
    assert http.head(f"{app_url}/").status_code == 200
    assert http.head(f"{app_url}/healthz").status_code == 200


# --- sessions: paging, running turn, stop ------------------------------------------------------


def test_a_long_session_pages_newest_first_with_an_older_cursor(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: a 3000-turn session was one 47 MB body. Pages hold `limit` messages."""
    url = live_app(settings_for(simulator)).url
    simulator.sim.script({"chunks": ["r"], "times": 60})
    session = stream_chat(http, f"{url}/chat", params={"prompt": "p0"}).session
    for i in range(1, 60):
        stream_chat(http, f"{url}/chat", params={"prompt": f"p{i}", "session": session})
    first = http.get(f"{url}/sessions/{session}").json()
    assert len(first["messages"]) == 100 and first["running_turn"] is None
    assert first["messages"][0]["content"] == "p10" and first["messages"][-1]["content"] == "r"
    older = http.get(f"{url}/sessions/{session}", params={"before": first["older"]}).json()
    assert [m["content"] for m in older["messages"]][:2] == ["p0", "r"]
    assert len(older["messages"]) == 20 and older["older"] is None
    small = http.get(f"{url}/sessions/{session}", params={"limit": 3}).json()
    assert [m["content"] for m in small["messages"]] == ["r", "p59", "r"]
    assert http.get(f"{url}/sessions/{session}", params={"limit": 501}).status_code == 400
    assert http.get(f"{url}/sessions/{session}", params={"before": "x"}).status_code == 400


def test_stop_ends_the_running_turn_and_stores_it_interrupted(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator)).url
    simulator.sim.script({"chunks": [f"s{i} " for i in range(100)], "delay_ms": 50})
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{url}/chat", params={"prompt": "go"}, timeout=10) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 4:
                session = events[0]["session"]
                running = http.get(f"{url}/sessions/{session}").json()["running_turn"]
                assert isinstance(running, str) and running
                assert http.post(f"{url}/sessions/{session}/stop").status_code == 202
    assert events[-1]["lifecycle"] == "done" and events[-1]["finish_reason"] == "stopped"
    tokens = "".join(e["token"] for e in events if "token" in e)
    stored = http.get(f"{url}/sessions/{session}").json()
    assert stored["running_turn"] is None
    assert (stored["messages"][-1]["content"], stored["messages"][-1]["status"]) == (
        tokens,
        "interrupted",
    )
    assert simulator.log[0]["outcome"] == "client_closed"  # the provider request was closed
    assert http.post(f"{url}/sessions/{session}/stop").status_code == 204
    assert http.post(f"{url}/sessions/{'A' * 22}/stop").status_code == 404


def test_connections_that_never_send_a_request_head_are_closed(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """Reproduced: 20,000 idle connections exhausted file descriptors and /healthz failed.
    Now a new connection has HEADER_TIMEOUT_SECONDS to send its request head: silent ones
    and trickling ones are closed, and the server keeps answering meanwhile."""
    url = live_app(settings_for(simulator, header_timeout_seconds=1.0)).url
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(50)]
    trickling = socket.create_connection((host, int(port)), timeout=5)
    try:
        assert http.get(f"{url}/healthz").status_code == 200
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\n":
            try:
                trickling.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        for sock in [*idle, trickling]:
            assert sock.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 4
        assert http.get(f"{url}/healthz").status_code == 200
    finally:
        for sock in [*idle, trickling]:
            sock.close()


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/sessions/{sid}/stream", {}),
        ("GET", "/sessions/{sid}/stream?after={sid}.t.1", {}),
        ("POST", "/sessions/{sid}/stop", {}),
        ("GET", "/chat", {"last-event-id": "{sid}.t.1"}),
        ("POST", "/chat", {"idempotency-key": "k-1"}),
    ],
)
def test_the_durable_turn_routes_are_behind_the_access_key(
    simulator: SimulatorServer,
    live_app: AppFactory,
    http: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    """Resume, join, Stop and idempotent repeats read or change a session: without the access
    key they answer 401, before anything is looked up."""
    url = live_app(settings_for(simulator, access_key="k-0123456789")).url
    key = {"authorization": "Bearer k-0123456789"}
    session = stream_chat(http, f"{url}/chat", params={"prompt": "hi"}, headers=key).session
    target = url + path.format(sid=session)
    sent = {name: value.format(sid=session) for name, value in headers.items()}
    refused = http.request(method, target, headers=sent, json={"prompt": "x"})
    assert refused.status_code == 401 and "access key" in refused.json()["error"]
    assert len(simulator.log) == 1  # only the keyed turn reached the model
