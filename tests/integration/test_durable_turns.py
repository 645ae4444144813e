"""Durable turns over real sockets: resume by Last-Event-ID, Stop and a lost producer across
server processes sharing one DynamoDB table, a reader that never reads.

Bounds asserted are the contract's own (Stop within 2 s); everything else waits generously.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import TEST_KEY, AppFactory, SimulatorServer, free_port, settings_for
from tests.dynamodb_table import create_table_from_template
from tests.sse_client import Received, stream_chat
from tests.store_fixtures import FAKE_REGION, moto_endpoint, use_fake_aws

CHUNKS = [f"w{i} " for i in range(40)]
SLOW_MS = 40  # per chunk: the turn lasts long enough to be cut, resumed, stopped or killed


def read_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, data) of each SSE message as it arrives; comments and `retry:` are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in fields:
                yield fields.get("id", ""), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def read_all(response: httpx.Response) -> Received:
    got = Received(response.status_code, response.headers)
    for event_id, data in read_events(response):
        got.ids.append(event_id)
        got.events.append(data)
    return got


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> str:
    use_fake_aws(monkeypatch, moto_endpoint())
    name = f"sessions-{uuid.uuid4().hex[:8]}"
    create_table_from_template(boto3.client("dynamodb"), name)
    return name


@pytest.fixture(params=["sqlite", "dynamodb"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings two app instances share: one SQLite file, or one DynamoDB table (moto)."""
    if request.param == "sqlite":
        return {"session_store": "sqlite", "sqlite_path": str(tmp_path / "sessions.db")}
    table_name: str = request.getfixturevalue("table")
    return {"session_store": "dynamodb", "sessions_table": table_name}


def test_resume_on_another_instance_continues_exactly_where_the_first_stopped(
    simulator: SimulatorServer, live_app: AppFactory, shared_store: dict[str, Any]
) -> None:
    # GIVEN two app instances over one store, and a slow reply
    first_app = live_app(settings_for(simulator, **shared_store))
    second_app = live_app(settings_for(simulator, **shared_store))
    simulator.sim.script({"chunks": CHUNKS, "delay_ms": SLOW_MS})
    # WHEN a client reads part of the turn on the first, drops, and resumes on the second
    with httpx.Client(timeout=30) as http:
        part = Received(200, httpx.Headers())
        with http.stream("GET", f"{first_app.url}/chat", params={"prompt": "go"}) as response:
            for event_id, data in read_events(response):
                part.ids.append(event_id)
                part.events.append(data)
                if len(part.tokens) == 5:
                    break
        with http.stream(
            "GET", f"{second_app.url}/chat", headers={"Last-Event-ID": part.ids[-1]}
        ) as response:
            assert response.status_code == 200
            rest = read_all(response)
        # THEN both parts together are the whole turn, as a full replay shows it
        with http.stream("GET", f"{second_app.url}/sessions/{part.session}/stream") as response:
            whole = read_all(response)
        assert part.ids + rest.ids == whole.ids
        assert part.events + rest.events == whole.events
        assert whole.text == "".join(CHUNKS) and whole.last["lifecycle"] == "done"
        assert len(simulator.log) == 1  # one upstream request
        # AND the turn is over: resuming after its last event gets 204, an unknown id 404
        done = http.get(f"{first_app.url}/chat", headers={"Last-Event-ID": whole.ids[-1]})
        assert done.status_code == 204
        unknown = http.get(
            f"{first_app.url}/chat", headers={"Last-Event-ID": f"{part.session}.nope.1"}
        )
        assert unknown.status_code == 404 and "error" in unknown.json()
        session = http.get(f"{second_app.url}/sessions/{part.session}").json()
        assert session["running_turn"] is None
        assert session["messages"][-1]["content"] == "".join(CHUNKS)


def test_an_idempotent_repeat_joins_the_first_turn(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app().url
    simulator.sim.script({"chunks": ["one", " turn"], "delay_ms": 20})
    headers = {"Idempotency-Key": "retry-1"}
    first = stream_chat(http, f"{url}/chat", method="POST", json={"prompt": "x"}, headers=headers)
    again = stream_chat(http, f"{url}/chat", method="POST", json={"prompt": "x"}, headers=headers)
    assert again.ids == first.ids and again.events == first.events
    assert len(simulator.log) == 1
    stored = http.get(f"{url}/sessions/{first.session}").json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]


def test_a_reader_that_never_reads_does_not_hold_the_turn(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN a session, and a client that sends a prompt on it and never reads a byte
    url = live_app(settings_for(simulator, send_timeout_seconds=1)).url
    simulator.sim.script({"chunks": ["hello"]}, {"chunks": ["x" * 1000] * 300}, {"chunks": ["ok"]})
    session = stream_chat(http, f"{url}/chat", params={"prompt": "hi"}).session
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.connect((host, port))
    try:
        silent.sendall(
            f"GET /chat?prompt=long&session={session} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        )
        # THEN the turn still finishes and is stored complete
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            messages = http.get(f"{url}/sessions/{session}").json()["messages"]
            if len(messages) == 4:
                break
            time.sleep(0.1)
        assert messages[-1]["status"] == "complete"
        assert messages[-1]["content"] == "x" * 300_000
        # AND the next turn on the session is accepted
        nxt = stream_chat(http, f"{url}/chat", params={"prompt": "next", "session": session})
        assert nxt.status == 200 and nxt.last["lifecycle"] == "done"
    finally:
        silent.close()


class ServerProcess:
    """`python -m handlers.serve` in a child process, on DynamoDB (moto) and the simulator."""

    def __init__(self, sim: SimulatorServer, table: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "SESSION_STORE": "dynamodb",
            "SESSIONS_TABLE": table,
            "AWS_ENDPOINT_URL_DYNAMODB": moto_endpoint(),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": FAKE_REGION,
            "AWS_REGION": FAKE_REGION,
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "OPENAI_BASE_URL": sim.url,
            "OPENAI_API_KEY": TEST_KEY,
            "OPENAI_MODEL": "test-model",
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "handlers.serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture
def two_servers(
    simulator: SimulatorServer, table: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        ServerProcess(simulator, table, tmp_path / "a.log") as a,
        ServerProcess(simulator, table, tmp_path / "b.log") as b,
    ):
        yield a, b


class Reader(threading.Thread):
    """Follows a session's turn on one server in the background, noting when each event came."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.got = Received(0, httpx.Headers())
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=60) as http, http.stream("GET", self.url) as response:
                self.got.status = response.status_code
                for event_id, data in read_events(response):
                    self.got.ids.append(event_id)
                    self.got.events.append(data)
                    self.got.times.append(time.monotonic())
        except BaseException as exc:
            self.error = exc


def start_turn(url: str, tokens: int) -> tuple[httpx.Client, Any, Iterator[Any], Received]:
    """Open a turn on `url` and read until `tokens` tokens arrived; the stream stays open."""
    http = httpx.Client(timeout=60)
    context = http.stream("POST", f"{url}/chat", json={"prompt": "long"})
    response = context.__enter__()
    assert response.status_code == 200
    events = read_events(response)
    got = Received(200, response.headers)
    for event_id, data in events:
        got.ids.append(event_id)
        got.events.append(data)
        if len(got.tokens) >= tokens:
            break
    return http, context, events, got


def test_a_stop_on_another_process_ends_the_turn_and_closes_the_upstream_request(
    simulator: SimulatorServer, two_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_servers
    simulator.sim.script({"chunks": [f"t{i} " for i in range(400)], "delay_ms": 50})
    # GIVEN a turn produced on A, and a reader on B
    http, context, events, produced = start_turn(a.url, 3)
    try:
        session = produced.session
        reader = Reader(f"{b.url}/sessions/{session}/stream")
        reader.start()
        deadline = time.monotonic() + 30
        while len(reader.got.tokens) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = httpx.get(f"{b.url}/sessions/{session}").json()["running_turn"]
        assert running == produced.events[0]["turn"]
        # WHEN B is asked to stop it
        asked = time.monotonic()
        assert httpx.post(f"{b.url}/sessions/{session}/stop").status_code == 202
        reader.join(timeout=30)
        # THEN B's reader gets done/stopped within 2 s, and the upstream request was closed
        assert reader.error is None and not reader.is_alive()
        assert reader.got.last == reader.got.last | {
            "lifecycle": "done",
            "finish_reason": "stopped",
        }
        assert reader.got.times[-1] - asked <= 2.0
        for event_id, data in events:
            produced.ids.append(event_id)
            produced.events.append(data)
        assert produced.last["finish_reason"] == "stopped"
        assert produced.ids[-1] == reader.got.ids[-1]
        assert simulator.log[-1]["outcome"] == "client_closed"
        stored = httpx.get(f"{b.url}/sessions/{session}").json()
        assert stored["running_turn"] is None
        assert stored["messages"][-1]["status"] == "interrupted"
        assert stored["messages"][-1]["content"] == produced.text
    finally:
        context.__exit__(None, None, None)
        http.close()


def test_a_killed_producer_is_declared_lost_and_its_flushed_reply_kept(
    simulator: SimulatorServer, two_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_servers
    simulator.sim.script(
        {"chunks": [f"k{i} " for i in range(400)], "delay_ms": 50}, {"chunks": ["after"]}
    )
    # GIVEN a turn produced on A, followed by a reader on B
    http, context, _, produced = start_turn(a.url, 3)
    session = produced.session
    reader = Reader(f"{b.url}/sessions/{session}/stream")
    reader.start()
    deadline = time.monotonic() + 30
    while len(reader.got.tokens) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    # WHEN A is killed mid-turn
    a.kill()
    context.__exit__(None, None, None)
    http.close()
    reader.join(timeout=60)
    # THEN B's reader gets the error event, after every token that was flushed
    assert reader.error is None and not reader.is_alive()
    assert reader.got.last == {"error": "the reply was interrupted"}
    assert len(reader.got.ids) == len(set(reader.got.ids))
    # AND the session keeps that reply as interrupted, and takes the next turn
    stored = httpx.get(f"{b.url}/sessions/{session}").json()
    assert stored["running_turn"] is None
    assert stored["messages"][-1]["status"] == "interrupted"
    assert stored["messages"][-1]["content"] == reader.got.text
    assert reader.got.text.startswith(produced.text)
    with httpx.Client(timeout=30) as client:
        nxt = stream_chat(
            client, f"{b.url}/chat", method="POST", json={"prompt": "again", "session": session}
        )
    assert nxt.status == 200 and nxt.last["lifecycle"] == "done"


def test_the_stream_endpoint_replays_from_any_event_and_refuses_unknown_ones(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN a finished turn
    url = live_app().url
    simulator.sim.script({"chunks": ["a", "b", "c", "d"]})
    turn = stream_chat(http, f"{url}/chat", params={"prompt": "x"})
    stream = f"{url}/sessions/{turn.session}/stream"
    # THEN the stream replays it whole, or after any of its events, with the same ids
    whole = stream_chat(http, stream)
    assert (whole.ids, whole.events) == (turn.ids, turn.events)
    after = stream_chat(http, stream, params={"after": turn.ids[2]})
    assert (after.ids, after.events) == (turn.ids[3:], turn.events[3:])
    # AND Last-Event-ID wins over `after`
    header = stream_chat(
        http, stream, params={"after": turn.ids[0]}, headers={"Last-Event-ID": turn.ids[4]}
    )
    assert header.ids == turn.ids[5:]
    # AND nothing left: 204; an id of another session, or no id at all: 404 JSON
    assert http.get(stream, params={"after": turn.ids[-1]}).status_code == 204
    for bad in ("nope", f"{turn.session}.x.1", "other-session.t.1", "a.b.c.d"):
        refused = http.get(stream, params={"after": bad})
        assert refused.status_code == 404 and refused.json()["error"], bad
    refused = http.get(f"{url}/chat", headers={"Last-Event-ID": "garbage"})
    assert refused.status_code == 404 and refused.json()["error"]
    assert len(simulator.log) == 1  # resuming never starts a turn
    # AND Stop with no turn running is 204; an unknown session is 404
    assert http.post(f"{url}/sessions/{turn.session}/stop").status_code == 204
    unknown = "A" * 22
    assert http.get(f"{url}/sessions/{unknown}/stream").status_code == 404
    assert http.post(f"{url}/sessions/{unknown}/stop").status_code == 404


def test_an_idempotent_repeat_on_another_process_joins_the_running_turn(
    simulator: SimulatorServer, two_servers: tuple[ServerProcess, ServerProcess]
) -> None:
    a, b = two_servers
    simulator.sim.script({"chunks": [f"i{i} " for i in range(30)], "delay_ms": 20})
    headers = {"Idempotency-Key": "same-request"}
    with httpx.Client(timeout=30) as http, httpx.Client(timeout=30) as other:
        # GIVEN a request with a key, still streaming on A
        first = Received(200, httpx.Headers())
        with http.stream(
            "POST", f"{a.url}/chat", json={"prompt": "x"}, headers=headers
        ) as response:
            events = read_events(response)
            for event_id, data in events:
                first.ids.append(event_id)
                first.events.append(data)
                if len(first.tokens) == 3:
                    break
            # WHEN the same request (same key) reaches B meanwhile
            again = stream_chat(
                other, f"{b.url}/chat", method="POST", json={"prompt": "x"}, headers=headers
            )
            for event_id, data in events:
                first.ids.append(event_id)
                first.events.append(data)
    # THEN it replays the first request's turn from its start: one upstream request
    assert again.status == 200
    assert (again.ids, again.events) == (first.ids, first.events)
    assert len(simulator.log) == 1
