"""Sessions over HTTP: continuity, the session API, interruption and racing turns."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat


def test_second_turn_sends_the_first_turns_messages(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["Hi", " Ada"]}, {"chunks": ["Ada", "!"]})
    first = stream_chat(http, f"{app_url}/chat", params={"prompt": "I am Ada"})
    second = stream_chat(
        http,
        f"{app_url}/chat",
        method="POST",
        json={"prompt": "Who am I?", "session": first.session},
    )
    assert second.session == first.session
    sent = simulator.log[1]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "You are a test assistant."),
        ("user", "I am Ada"),
        ("assistant", "Hi Ada"),
        ("user", "Who am I?"),
    ]


def test_session_api_lists_messages_then_forgets_them(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["ré", "ponse 🎉"]})
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "quest\u00efon 🎯"})
    response = http.get(f"{app_url}/sessions/{got.session}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == got.session
    assert [(m["role"], m["content"], m["status"]) for m in body["messages"]] == [
        ("user", "quest\u00efon 🎯", "complete"),
        ("assistant", "réponse 🎉", "complete"),
    ]
    assert all(isinstance(m["created_at"], int | float) for m in body["messages"])
    assert http.delete(f"{app_url}/sessions/{got.session}").status_code == 204
    assert http.get(f"{app_url}/sessions/{got.session}").status_code == 404
    assert http.delete(f"{app_url}/sessions/{got.session}").status_code == 404
    refused = http.get(f"{app_url}/chat", params={"prompt": "again", "session": got.session})
    assert refused.status_code == 404


def test_client_disconnect_leaves_the_turn_running_to_its_end_and_stored_whole(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    """DESIGN §8 "Disconnect": the turn goes on to its end and is stored complete, whether or
    not a client is connected (on Lambda nobody could tell it the client left anyway)."""
    # GIVEN a slow upstream reply of 20 tokens
    chunks = [f"w{i} " for i in range(20)]
    simulator.sim.script({"chunks": chunks, "delay_ms": 50})
    seen: list[str] = []
    session = ""
    # WHEN the client reads three tokens, then goes away
    with httpx.stream("GET", f"{app_url}/chat", params={"prompt": "long"}, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"session"' in line:
                session = line.split('"session": "')[1].split('"')[0]
            elif line.startswith('data: {"token"'):
                seen.append(line.split('"token": "')[1].split('"')[0])
                if len(seen) == 3:
                    break
    # THEN the upstream stream runs to completion
    deadline = time.monotonic() + 10
    while simulator.log[0]["outcome"] == "open" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert simulator.log[0]["outcome"] == "completed"
    assert simulator.log[0]["chunks_sent"] == len(chunks)
    # AND the whole reply is stored, complete, and the session takes the next turn
    for _ in range(200):
        messages = http.get(f"{app_url}/sessions/{session}").json()["messages"]
        if len(messages) == 2:
            break
        time.sleep(0.02)
    user, reply = messages
    assert user["content"] == "long"
    assert (reply["content"], reply["status"]) == ("".join(chunks), "complete")
    assert reply["content"].startswith("".join(seen))
    simulator.sim.script({"chunks": ["next"]})
    got = stream_chat(http, f"{app_url}/chat", params={"prompt": "more", "session": session})
    assert got.text == "next"


def test_racing_turns_each_complete_or_get_409(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator)).url
    simulator.sim.script({"chunks": ["first"]})
    session = stream_chat(http, f"{url}/chat", params={"prompt": "start"}).session
    simulator.sim.script(*[{"chunks": [f"reply{i}"], "delay_ms": 50} for i in range(10)])
    barrier = threading.Barrier(10)

    def one(i: int) -> tuple[int, str]:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            got = stream_chat(
                client, f"{url}/chat", method="POST", json={"prompt": f"p{i}", "session": session}
            )
            if got.status == 409:
                assert set(got.last) == {"error"}
                return 409, ""
            assert got.last["lifecycle"] == "done"
            return 200, f"p{i}"

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    ok = [prompt for status, prompt in results if status == 200]
    assert {status for status, _ in results} <= {200, 409}
    assert ok, "at least one racing turn completes"
    messages = http.get(f"{url}/sessions/{session}").json()["messages"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    # Every accepted prompt is stored with its reply right after it; refused ones left no trace.
    assert sorted(users) == sorted(["start", *ok])
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * (len(ok) + 1)
