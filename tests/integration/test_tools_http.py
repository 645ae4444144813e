"""Tool calling over HTTP with the simulator (the tool-calling issue's acceptance)."""

from __future__ import annotations

import httpx

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.history_rules import assert_valid_openai_history
from tests.sse_client import stream_chat


def test_calculator_call_streams_call_result_tokens_done(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN a model that calls the calculator for 6*7, then answers
    simulator.sim.script(
        {
            "tool_calls": [
                {"id": "call_42", "name": "calculator", "arguments": '{"expression": "6*7"}'}
            ]
        },
        {"chunks": ["It", " is", " 42."]},
    )
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "What is 6*7?"})
    kinds = [next(iter(e)) if "lifecycle" not in e else e["lifecycle"] for e in got.events]
    assert kinds == ["started", "tool_call", "tool_result", "token", "token", "token", "done"]
    assert got.events[1]["tool_call"] == {"id": "call_42", "name": "calculator"}
    result = got.events[2]["tool_result"]
    assert result["id"] == "call_42" and result["name"] == "calculator" and result["ok"] is True
    assert "42" in result["output"]
    # THEN the second upstream request carries the call and its answer
    second = simulator.log[1]["body"]["messages"]
    assert second[-2]["role"] == "assistant"
    assert second[-2]["tool_calls"][0]["id"] == "call_42"
    assert second[-2]["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "6*7"}',
    }
    assert second[-1] == {"role": "tool", "content": result["output"], "tool_call_id": "call_42"}


def test_simulated_parallel_and_broken_calls_then_a_valid_next_turn(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script(
        {
            "tool_calls": [
                {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                {"name": "calculator", "arguments": "{broken"},
                {"name": "teleport", "arguments": "{}"},
            ]
        },
        {"chunks": ["done"]},
        {"chunks": ["next"]},
    )
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "go"})
    results = [e["tool_result"] for e in got.events if "tool_result" in e]
    assert [r["ok"] for r in results] == [True, False, False]
    assert got.last["lifecycle"] == "done"
    stream_chat(http, f"{app_url}/chat", params={"prompt": "more", "session": got.session})
    third = simulator.log[2]["body"]["messages"]
    assert_valid_openai_history(third)
    stored = http.get(f"{app_url}/sessions/{got.session}").json()["messages"]
    assert [m["role"] for m in stored] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]


def test_default_simulator_uses_the_calculator_on_its_own(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "what is 12*12?"})
    names = [e["tool_call"]["name"] for e in got.events if "tool_call" in e]
    assert names == ["calculator"]
    assert "144" in got.text


def test_role_changes_the_system_prompt(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    stream_chat(http, f"{app_url}/chat", method="POST", json={"prompt": "hi", "role": "concise"})
    system = simulator.log[0]["body"]["messages"][0]
    assert system["role"] == "system" and "few words" in system["content"]


def test_a_model_looping_on_tools_forever_hits_the_step_limit(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN a model that answers every request with another calculator call
    url = live_app(settings_for(simulator, max_tool_steps=3)).url
    simulator.sim.script(
        {"tool_calls": [{"name": "calculator", "arguments": '{"expression": "1+1"}'}], "times": 50}
    )
    got = stream_chat(http, f"{url}/chat", params={"prompt": "loop"})
    # THEN three tool rounds run, the fourth request's call is refused with an error event
    assert sum("tool_result" in e for e in got.events) == 3
    assert "tool step limit reached" in got.last["error"]
    assert len(simulator.log) == 4
    stored = http.get(f"{url}/sessions/{got.session}").json()["messages"]
    assert [m["role"] for m in stored] == ["user"] + ["assistant", "tool"] * 3 + ["assistant"]
    assert stored[-1]["status"] == "failed"
