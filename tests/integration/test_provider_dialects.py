"""Providers that do things their own way: no usage, a drop before the first token, no `[DONE]`,
`retry-after-ms`, and the step limit. Against the simulator over real sockets."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import Received, stream_chat


def turn(http: httpx.Client, url: str, prompt: str = "hi", session: str | None = None) -> Received:
    params = {"prompt": prompt} | ({"session": session} if session else {})
    return stream_chat(http, f"{url}/chat", params=params)


def clean(got: Received) -> None:
    """One whole turn: `started` first, tokens, `done` last, no error anywhere."""
    assert got.status == 200
    assert got.events[0]["lifecycle"] == "started"
    assert got.last["lifecycle"] == "done", got.last
    assert not any("error" in e for e in got.events)
    assert sum(e.get("lifecycle") == "started" for e in got.events) == 1


def stored(http: httpx.Client, url: str, session: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/sessions/{session}")
    assert response.status_code == 200
    return list(response.json()["messages"])


# --- usage -------------------------------------------------------------------------------------


def test_no_usage_from_the_provider_gives_an_estimate_marked_as_such(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"content": "four words of reply", "usage": False})
    got = turn(http, app_url, "how many tokens is this prompt")
    clean(got)
    usage = got.last["usage"]
    assert usage["estimated"] is True
    assert usage["prompt_tokens"] > 6
    assert usage["completion_tokens"] >= 4
    # The provider was asked for usage and sent none
    assert simulator.log[0]["body"]["stream_options"] == {"include_usage": True}


def test_provider_usage_is_passed_on_and_not_marked_estimated(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"content": "x", "usage": {"prompt_tokens": 7, "completion_tokens": 1}})
    got = turn(http, app_url)
    assert got.last["usage"] == {"prompt_tokens": 7, "completion_tokens": 1}


def test_the_daily_quota_counts_estimated_usage(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN DAILY_TOKEN_QUOTA=5 and a provider that never reports usage
    url = live_app(settings_for(simulator, daily_token_quota=5)).url
    simulator.sim.script({"content": "a short answer", "usage": False, "times": 5})
    # WHEN a client runs a turn, then asks again
    clean(turn(http, url))
    refused = http.get(f"{url}/chat", params={"prompt": "again"})
    # THEN the second is refused: the estimate was counted
    assert refused.status_code == 429
    assert "daily token quota" in refused.json()["error"]
    assert len(simulator.log) == 1


def test_a_reply_cut_short_still_counts_against_the_daily_quota(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # A cut reply never gets the provider's usage chunk: its tokens are estimated all the same.
    url = live_app(settings_for(simulator, daily_token_quota=5)).url
    simulator.sim.script({"chunks": ["a", "b", "c"], "fault": "cut", "after_chunks": 2})
    got = turn(http, url)
    assert got.tokens == ["a", "b"] and set(got.last) == {"error"}
    refused = http.get(f"{url}/chat", params={"prompt": "again"})
    assert refused.status_code == 429
    assert "daily token quota" in refused.json()["error"]


def test_a_stopped_reply_still_counts_against_the_daily_quota(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # Otherwise a client that stops every reply just before its end would never be counted.
    url = live_app(settings_for(simulator, daily_token_quota=5)).url
    simulator.sim.script({"chunks": [f"s{i} " for i in range(100)], "delay_ms": 50})
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{url}/chat", params={"prompt": "go"}, timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 4:
                    stop = http.post(f"{url}/sessions/{events[0]['session']}/stop")
                    assert stop.status_code == 202
    assert events[-1]["finish_reason"] == "stopped"
    assert events[-1]["usage"]["estimated"] is True
    assert events[-1]["usage"]["completion_tokens"] > 0
    refused = http.get(f"{url}/chat", params={"prompt": "again"})
    assert refused.status_code == 429


# --- a drop before the first token -------------------------------------------------------------


def test_a_drop_before_the_first_token_is_retried_and_the_client_sees_one_clean_turn(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "drop"}, {"chunks": ["after", " the", " drop"]})
    got = turn(http, app_url)
    clean(got)
    assert got.text == "after the drop"
    assert [e["outcome"] for e in simulator.log] == ["drop", "completed"]
    assert simulator.log[0]["status"] == 200  # headers came, then nothing
    assert stored(http, app_url, got.session)[-1]["status"] == "complete"


def test_drops_before_the_first_token_are_tried_at_most_three_times(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"fault": "drop", "times": 5})
    got = turn(http, app_url)
    assert set(got.last) == {"error"}
    assert "closed the stream" in got.last["error"]
    assert len(simulator.log) == 3
    assert stored(http, app_url, got.session)[-1]["status"] == "failed"


def test_a_drop_after_tokens_were_relayed_is_not_retried(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["a", "b", "c"], "fault": "cut", "after_chunks": 2})
    got = turn(http, app_url)
    assert got.tokens == ["a", "b"]
    assert set(got.last) == {"error"}
    assert len(simulator.log) == 1  # a retry would relay "a" twice


# --- finish_reason without [DONE] --------------------------------------------------------------


def test_a_finish_reason_without_done_is_a_whole_reply(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["whole", " reply"], "fault": "no_done"})
    got = turn(http, app_url)
    clean(got)
    assert got.last["finish_reason"] == "stop"
    assert got.last["usage"]["completion_tokens"] == 2  # the usage chunk still counted
    assert simulator.log[0]["outcome"] == "no_done"
    last = stored(http, app_url, got.session)[-1]
    assert (last["content"], last["status"]) == ("whole reply", "complete")


def test_no_finish_reason_and_no_done_is_still_an_error(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # A body that just ends after tokens (no finish_reason, no [DONE]) is cut short, not whole.
    simulator.sim.script({"chunks": ["a", "b", "c"], "fault": "cut", "after_chunks": 3})
    got = turn(http, app_url)
    assert set(got.last) == {"error"}
    assert stored(http, app_url, got.session)[-1]["status"] == "interrupted"


# --- retry-after-ms ----------------------------------------------------------------------------


def test_retry_after_ms_is_honoured_over_retry_after(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN a 429 saying retry-after: 3 and retry-after-ms: 200
    simulator.sim.script(
        {"fault": "429", "retry_after": 3, "retry_after_ms": 200}, {"chunks": ["ok"]}
    )
    started = time.monotonic()
    got = turn(http, app_url)
    # THEN the retry came after about 0.2 s, not 3 s
    clean(got)
    first, second = simulator.log
    closed = first["closed_at"]
    assert closed is not None
    gap = second["started_at"] - closed
    assert 0.19 <= gap < 1.5, gap
    assert time.monotonic() - started < 2.5


# --- the step limit ----------------------------------------------------------------------------


def test_the_step_limit_error_follows_no_dangling_tool_call(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, max_tool_steps=2)).url
    simulator.sim.script(
        {"tool_calls": [{"name": "calculator", "arguments": '{"expression": "1+1"}'}], "times": 9}
    )
    got = turn(http, url, "loop")
    assert "tool step limit reached" in got.last["error"]
    calls = [e["tool_call"]["id"] for e in got.events if "tool_call" in e]
    results = [e["tool_result"]["id"] for e in got.events if "tool_result" in e]
    assert len(calls) == 2
    assert calls == results  # every announced call got its result
    # The event before the error is a tool result, not a call nobody will answer
    assert "tool_result" in got.events[-2]
    assert len(simulator.log) == 3
