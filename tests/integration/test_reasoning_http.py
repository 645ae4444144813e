"""Reasoning end to end over real sockets: the HTTP simulator streams it, the app relays it
apart from the reply, stores it, shows it, and sends it back where the provider needs it."""

from __future__ import annotations

import httpx
import pytest

from core.settings import Settings
from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_streams_before_the_reply_and_is_stored_beside_it(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, field: str
) -> None:
    url = live_app(settings_for(simulator)).url
    simulator.sim.script(
        {"reasoning": "Two and two make four.", "reasoning_field": field, "content": "It is 4."}
    )
    got = stream_chat(http, f"{url}/chat", params={"prompt": "2+2? think"})
    kinds = [next(iter(e)) for e in got.events]
    assert kinds[0] == "lifecycle" and kinds[-1] == "lifecycle"
    reasoning = "".join(e["reasoning"] for e in got.events if "reasoning" in e)
    assert reasoning == "Two and two make four."
    assert got.text == "It is 4."
    # Every reasoning event comes before the first token.
    assert max(i for i, k in enumerate(kinds) if k == "reasoning") < kinds.index("token")
    assert got.last["usage"]["reasoning_tokens"] == 6
    stored = http.get(f"{url}/sessions/{got.session}").json()["messages"][-1]
    assert (stored["content"], stored["reasoning"]) == ("It is 4.", "Two and two make four.")


def test_reasoning_of_a_tool_step_goes_back_to_the_provider_under_auto(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator)).url
    simulator.sim.script(
        {
            "reasoning": "I should use the calculator.",
            "tool_calls": [{"name": "calculator", "arguments": '{"expression": "6*7"}'}],
        },
        {"reasoning": "It said 42.", "content": "42"},
        {"content": "84"},
    )
    first = stream_chat(http, f"{url}/chat", params={"prompt": "6*7?"})
    assert first.text == "42"
    stream_chat(http, f"{url}/chat", params={"prompt": "doubled?", "session": first.session})
    replayed = simulator.log[2]["body"]["messages"]
    with_reasoning = [m for m in replayed if "reasoning_content" in m]
    assert [m.get("tool_calls") is not None for m in with_reasoning] == [True]
    assert with_reasoning[0]["reasoning_content"] == "I should use the calculator."


def test_the_in_process_simulator_reasons_when_asked_to_think(
    live_app: AppFactory, http: httpx.Client
) -> None:
    """`make serve` with no key: "Think it through: ..." shows a reasoning reply offline."""
    settings = Settings(session_store="memory", rate_limit_per_minute=0, simulator_token_delay_ms=0)
    url = live_app(settings).url
    got = stream_chat(
        http, f"{url}/chat", params={"prompt": "Think it through: why is the sky blue?"}
    )
    reasoning = "".join(e["reasoning"] for e in got.events if "reasoning" in e)
    assert reasoning.startswith("The user asks me to think first.")
    assert "built-in simulator" in got.text
    assert got.last["usage"]["reasoning_tokens"] > 0
    plain = stream_chat(http, f"{url}/chat", params={"prompt": "hello"})
    assert not any("reasoning" in e for e in plain.events)
