"""The turn over a real socket: exact relay, progressive delivery, protocol details."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.conftest import TEST_KEY, AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat

TRICKY_CHUNKS = [
    "Héllo",
    " wörld",
    " 👋🏽",
    " 你好，世界",
    "\nline two\r\n",
    '  "quoted" ',
    "back\\slash \\n not a newline",
    "\ttab",
    " </script><b>",
    "\u2028sep",
]


def test_tokens_concatenate_to_the_upstream_content_exactly(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN an upstream reply full of characters that break naive relays
    simulator.sim.script({"content": "".join(TRICKY_CHUNKS), "chunks": TRICKY_CHUNKS})
    # WHEN a client streams a turn
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    # THEN every token arrives unmodified and in order
    assert got.status == 200
    assert got.tokens == TRICKY_CHUNKS
    assert got.text == "".join(TRICKY_CHUNKS)


def test_stream_shape_started_tokens_done_with_ids_and_headers(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script(
        {"chunks": ["a", "b", "c"], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}
    )
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    assert got.headers["content-type"].startswith("text/event-stream")
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["x-accel-buffering"] == "no"
    assert got.events[0]["lifecycle"] == "started"
    assert got.events[0]["model"] == "test-model"
    assert len(got.events[0]["session"]) == 22
    assert got.last == {
        "lifecycle": "done",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 11, "completion_tokens": 3},
    }
    # Ids are opaque to clients: URL-safe, one per event, none twice.
    assert len(set(got.ids)) == len(got.ids) == len(got.events)
    assert all(re.fullmatch(r"[A-Za-z0-9._~-]+", i) for i in got.ids)
    assert got.events[0]["turn"] in got.ids[0] and got.events[0]["session"] in got.ids[0]


def test_tokens_arrive_progressively(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN an upstream that paces 8 tokens 100 ms apart
    simulator.sim.script({"chunks": [f"t{i} " for i in range(8)], "delay_ms": 100})
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    token_times = [t for t, e in zip(got.times, got.events, strict=True) if "token" in e]
    # THEN the first token was received well before the last (not buffered to the end)
    assert len(token_times) == 8
    assert token_times[-1] - token_times[0] >= 0.5


@pytest.mark.parametrize(
    "wire",
    [{"crlf": True}, {"comments": True}, {"nospace": True}, {"crlf": True, "comments": True}],
)
def test_upstream_sse_variants_parse(
    simulator: SimulatorServer, app_url: str, http: httpx.Client, wire: dict[str, bool]
) -> None:
    simulator.sim.script({"chunks": ["one", " two", " three"], "wire": wire})
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    assert got.text == "one two three"
    assert got.last["lifecycle"] == "done"


def test_post_chat_streams_the_same(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["po", "st"]})
    got = stream_chat(http, f"{app_url}/chat", method="POST", json={"prompt": "hi"})
    assert got.text == "post"
    assert got.last["lifecycle"] == "done"


def test_upstream_request_follows_the_contract(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN a system prompt, a token limit and the default tools
    settings = settings_for(simulator, system_prompt="Be exact.\nAlways.", max_tokens=77)
    url = live_app(settings).url
    prompt = "  spaced 'prompt' with ünïcode ✓\nand a newline  "
    # WHEN a turn runs
    got = stream_chat(http, f"{url}/chat", method="POST", json={"prompt": prompt})
    assert got.last["lifecycle"] == "done"
    # THEN the upstream request carries exactly what DESIGN §8 promises
    [entry] = simulator.log
    body = entry["body"]
    assert entry["authorization"] == f"Bearer {TEST_KEY}"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "test-model"
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 77
    assert body["messages"][0] == {"role": "system", "content": "Be exact.\nAlways."}
    assert body["messages"][-1] == {"role": "user", "content": prompt}
    declared = {tool["function"]["name"] for tool in body["tools"]}
    assert declared == {"calculator", "get_current_time"}


def test_heartbeat_comment_while_upstream_is_slow(
    simulator: SimulatorServer, live_app: AppFactory
) -> None:
    # GIVEN a 0.3 s heartbeat and an upstream that stalls 1.2 s before its first token
    url = live_app(settings_for(simulator, heartbeat_seconds=0.3)).url
    simulator.sim.script({"fault": "stall", "stall_seconds": 1.2, "chunks": ["late"]})
    # WHEN the raw stream is read
    with httpx.stream("GET", f"{url}/chat", params={"prompt": "hi"}, timeout=10) as response:
        raw = response.read().decode()
    # THEN ": ping" comments kept the connection alive, and the reply still came
    assert raw.count(": ping") >= 2
    assert '"token": "late"' in raw


def test_server_closes_the_stream_right_after_done(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["x"]})
    start = time.monotonic()
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "hi"})
    assert got.last["lifecycle"] == "done"
    assert time.monotonic() - got.times[-1] < 2.0
    assert time.monotonic() - start < 5.0


def test_healthz_is_json(app_url: str, http: httpx.Client) -> None:
    response = http.get(f"{app_url}/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["status"] == "ok"
