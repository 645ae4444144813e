"""Injected upstream faults: one `{"error"}` event last, the stream closes, nothing is lost."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_KEY, AppFactory, SimulatorServer, settings_for
from tests.sse_client import Received, stream_chat


def turn(http: httpx.Client, url: str, prompt: str = "hi") -> Received:
    return stream_chat(http, f"{url}/chat", params={"prompt": prompt})


def assert_failed(got: Received) -> str:
    """A failed turn: 200 event-stream, `started` first, `{"error"}` last, no `done`."""
    assert got.status == 200
    assert got.events[0]["lifecycle"] == "started"
    assert set(got.last) == {"error"}
    assert not any(e.get("lifecycle") == "done" for e in got.events)
    return str(got.last["error"])


def stored(http: httpx.Client, url: str, session: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/sessions/{session}")
    assert response.status_code == 200
    return list(response.json()["messages"])


def test_401_says_authentication_and_never_the_key(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "401"})
    message = assert_failed(turn(http, app_url))
    assert "API key" in message
    assert TEST_KEY not in message and "sk-" not in message
    assert len(simulator.log) == 1  # an auth failure is not retried


def test_429_is_retried_after_retry_after_and_succeeds(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "429", "retry_after": 1}, {"chunks": ["recovered"]})
    start = time.monotonic()
    got = turn(http, app_url)
    assert got.text == "recovered"
    assert got.last["lifecycle"] == "done"
    assert len(simulator.log) == 2
    assert time.monotonic() - start >= 1.0  # Retry-After was honoured


def test_500_is_tried_at_most_three_times_then_an_error_within_30_s(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "500", "times": 10})
    start = time.monotonic()
    message = assert_failed(turn(http, app_url))
    assert "HTTP 500" in message
    assert len(simulator.log) == 3
    assert time.monotonic() - start < 30


def test_500_then_success_is_recovered(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "500", "times": 2}, {"chunks": ["ok"]})
    got = turn(http, app_url)
    assert got.text == "ok"
    assert len(simulator.log) == 3


def test_cut_mid_stream_gives_the_tokens_so_far_then_an_error_and_stores_them(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "cut", "after_chunks": 3, "chunks": ["a", "b", "c", "d", "e"]})
    got = turn(http, app_url, "tell me")
    assert got.tokens == ["a", "b", "c"]
    assert "closed the stream" in assert_failed(got)
    assert len(simulator.log) == 1  # never retried after tokens were relayed
    messages = stored(http, app_url, got.session)
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "tell me", "complete"),
        ("assistant", "abc", "interrupted"),
    ]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"fault": "malformed", "after_chunks": 2}, "not JSON"),
        ({"fault": "no_finish"}, "finish reason"),
    ],
)
def test_protocol_faults_are_errors_not_silent_success(
    simulator: SimulatorServer,
    app_url: str,
    http: httpx.Client,
    fault: dict[str, Any],
    expected: str,
) -> None:
    simulator.sim.script(fault | {"chunks": ["x", "y", "z"]})
    assert expected in assert_failed(turn(http, app_url))


def test_stall_before_first_token_times_out(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, first_token_timeout_seconds=0.5)).url
    simulator.sim.script({"fault": "stall", "stall_seconds": 30})
    start = time.monotonic()
    assert "in time" in assert_failed(turn(http, url))
    assert time.monotonic() - start < 5


def test_stall_mid_stream_times_out_on_the_idle_gap(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, idle_timeout_seconds=0.5)).url
    simulator.sim.script(
        {"fault": "stall", "stall_seconds": 30, "after_chunks": 2, "chunks": ["a", "b", "c"]}
    )
    got = turn(http, url)
    assert got.tokens == ["a", "b"]
    assert "stopped sending" in assert_failed(got)


def test_turn_deadline_ends_with_time_limit_reached(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, turn_timeout_seconds=1.0)).url
    simulator.sim.script({"chunks": [f"{i} " for i in range(100)], "delay_ms": 50})
    got = turn(http, url)
    assert assert_failed(got) == "time limit reached"
    assert 5 < len(got.tokens) < 100
    [_, reply] = stored(http, url, got.session)
    assert reply["content"] == got.text


def test_unreachable_provider_is_a_clear_error(
    live_app: AppFactory, simulator: SimulatorServer, http: httpx.Client
) -> None:
    from tests.conftest import free_port

    dead = settings_for(simulator, openai_base_url=f"http://127.0.0.1:{free_port()}/v1")
    got = turn(http, live_app(dead).url)
    assert "could not connect" in assert_failed(got)


def test_server_stays_healthy_after_every_fault(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    for fault in ("401", "cut", "malformed", "no_finish"):
        simulator.sim.script({"fault": fault, "chunks": ["x", "y", "z", "w"]})
        assert_failed(turn(http, app_url))
    simulator.sim.script({"chunks": ["still", " fine"]})
    assert turn(http, app_url).text == "still fine"
    assert http.get(f"{app_url}/healthz").json()["status"] == "ok"
