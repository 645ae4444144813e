"""The simulator over a real socket: client disconnects, deliberate cuts, the standalone process."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from simulator import Simulator, create_simulator

BODY: dict[str, Any] = {
    "model": "gpt-test-model",
    "stream": True,
    "messages": [{"role": "user", "content": "Hi"}],
}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def served() -> Iterator[tuple[str, Simulator]]:
    """The simulator under uvicorn in a background thread; yields (base URL, Simulator)."""
    app = create_simulator(token_delay_ms=20)
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", log_config=None, timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app.state.simulator
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_client_close_is_recorded_as_client_closed(served: tuple[str, Simulator]) -> None:
    # GIVEN a long, paced reply
    base, sim = served
    sim.script({"content": " ".join(["word"] * 500), "delay_ms": 30})
    # WHEN the client reads two content chunks and closes the connection
    with (
        httpx.Client(base_url=base, timeout=5) as client,
        client.stream("POST", "/v1/chat/completions", json=BODY) as response,
    ):
        assert response.status_code == 200
        contents = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and 'word"' in line:
                contents += 1
                assert sim.open_streams == 1
            if contents == 2:
                break
        # Leaving the loop closes the line iterator, and with it the connection (httpcore).
        closed = time.monotonic()
    # THEN the simulator notices within a second and records how it ended
    wait_for(lambda: sim.log[-1]["closed_at"] is not None)
    entry = sim.log[-1]
    assert entry["outcome"] == "client_closed"
    assert entry["closed_at"] is not None
    assert entry["closed_at"] - closed < 1.0
    assert 2 <= entry["chunks_sent"] < 500
    wait_for(lambda: sim.open_streams == 0)


def test_client_close_during_stall_is_noticed(served: tuple[str, Simulator]) -> None:
    base, sim = served
    sim.script({"content": "never sent", "fault": "stall", "stall_seconds": 60})
    with (
        httpx.Client(base_url=base, timeout=httpx.Timeout(5, read=0.3)) as client,
        client.stream("POST", "/v1/chat/completions", json=BODY) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(httpx.ReadTimeout):
            next(response.iter_raw())
    closed = time.monotonic()
    wait_for(lambda: sim.log[-1]["closed_at"] is not None)
    assert sim.log[-1]["outcome"] == "client_closed"
    assert sim.log[-1]["chunks_sent"] == 0
    assert (sim.log[-1]["closed_at"] or 0) - closed < 1.0


def test_cut_drops_the_connection(
    served: tuple[str, Simulator], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a cut after 3 chunks
    base, sim = served
    sim.script({"content": "one two three four five six", "fault": "cut", "delay_ms": 0})
    received: list[str] = []
    caplog.set_level(logging.INFO)
    # WHEN the client reads the stream
    with (
        httpx.Client(base_url=base, timeout=5) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/v1/chat/completions", json=BODY) as response,
    ):
        received.extend(response.iter_lines())
    # THEN the body ends abruptly: three content chunks, no finish_reason, no [DONE]
    events = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
    assert [e["choices"][0]["delta"].get("content") for e in events] == [
        "",
        "one",
        " two",
        " three",
    ]
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    wait_for(lambda: sim.log[-1]["closed_at"] is not None)
    assert sim.log[-1]["outcome"] == "cut"
    # and the deliberate cut is not reported by the server as an application error
    assert not [r for r in caplog.records if "without completing" in r.getMessage()]


def test_stamps_and_pace_over_the_wire(served: tuple[str, Simulator]) -> None:
    base, sim = served
    sim.script({"stamp": True, "count": 10, "delay_ms": 10})
    gaps: list[float] = []
    with (
        httpx.Client(base_url=base, timeout=5) as client,
        client.stream("POST", "/v1/chat/completions", json=BODY) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content":"' in line:
                text = json.loads(line[6:])["choices"][0]["delta"]["content"]
                if text:
                    gaps.append((time.monotonic_ns() - int(text)) / 1e6)
    assert len(gaps) == 10
    assert all(0 <= gap < 500 for gap in gaps)  # stamped just before sending, same clock
    assert sim.log[-1]["outcome"] == "completed"


def test_standalone_process(tmp_path: Any) -> None:
    """`python -m simulator` serves the same API (the benchmark runs it this way)."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "--port", str(port), "--delay-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if client.get("/v1/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, "simulator process exited"
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.05)
            assert client.post("/_sim/script", json=[{"chunks": ["a", "b"]}]).status_code == 200
            text = client.post("/v1/chat/completions", json=BODY).text
            log = client.get("/_sim/log").json()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert '"content":"a"' in text and text.endswith("data: [DONE]\n\n")
    assert [entry["outcome"] for entry in log] == ["completed"]
