"""Faults inside the server over real HTTP: the session store failing or throttling mid-turn,
a client leaving during a slow tool, a bug in the turn. Each test says what the client sees
and what is stored; afterwards the server is healthy and the session usable (lease released).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import anyio
import httpx

from core.errors import StoreError
from core.model.messages import Message, ToolCall
from core.sessions.memory import MemorySessionStore
from core.tools.registry import Tool, ToolRegistry
from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.fakes import FakeModel, Step
from tests.history_rules import assert_valid_openai_history
from tests.sse_client import Received, stream_chat

STORE_ERROR_MESSAGE = "the conversation could not be saved; try again"


class FlakyStore(MemorySessionStore):
    """The memory store, but `fail` decides per method call whether it raises `StoreError`
    (what the DynamoDB store raises once its retries on throttling are spent)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: dict[str, set[int]] = {}  # method -> call numbers (1-based) that fail
        self.calls: dict[str, int] = {}

    def fail(self, method: str, *calls: int) -> None:
        self.failing[method] = set(calls)
        self.calls[method] = 0

    def _maybe_fail(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.calls[method] in self.failing.get(method, ()):
            raise StoreError("the session store is throttling requests")

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        self._maybe_fail("append")
        return await super().append(session_id, messages, seq=seq, now=now)

    async def unlock(self, session_id: str, *, owner: str) -> None:
        self._maybe_fail("unlock")
        await super().unlock(session_id, owner=owner)

    def stored(self, session_id: str) -> list[dict[str, Any]]:
        """What the store holds, read directly (every MemorySessionStore method is sync inside)."""
        session = asyncio.run(self.load(session_id, now=time.time()))
        return [m.to_public() for m in session.messages]


def turn(http: httpx.Client, url: str, prompt: str, session: str | None = None) -> Received:
    params = {"prompt": prompt} | ({"session": session} if session else {})
    return stream_chat(http, f"{url}/chat", params=params)


def contents(messages: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(m["role"], m["content"], m["status"]) for m in messages]


def test_reply_not_saved_once_gives_an_error_event_keeps_the_text_and_frees_the_session(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a store that throttles once, on the write of the assistant's reply
    WHEN a turn streams its reply
    THEN the client sees started, the tokens, then `{"error"}` (no done) and the stream ends;
    the retry of the write stores the relayed text marked `interrupted` (nothing lost);
    the next turn on the session works and the server is healthy."""
    store = FlakyStore()
    url = live_app(settings_for(simulator), sessions=store).url
    simulator.sim.script({"chunks": ["Hel", "lo"]}, {"chunks": ["again"]})
    store.fail("append", 1)  # the reply (a new session is created holding the prompt)
    got = turn(http, url, "hi")
    assert got.status == 200 and got.events[0]["lifecycle"] == "started"
    assert got.tokens == ["Hel", "lo"]
    assert got.last == {"error": STORE_ERROR_MESSAGE}
    assert not any(e.get("lifecycle") == "done" for e in got.events)
    assert contents(store.stored(got.session)) == [
        ("user", "hi", "complete"),
        ("assistant", "Hello", "interrupted"),
    ]
    nxt = turn(http, url, "more", got.session)
    assert nxt.last["lifecycle"] == "done" and nxt.text == "again"
    assert http.get(f"{url}/healthz").json()["status"] == "ok"


def test_store_down_for_the_rest_of_the_turn_stores_the_prompt_only_and_frees_the_lease(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a store that fails every write after the user message
    THEN the client sees the tokens then `{"error"}`; the store holds the prompt only
    (no half reply, no dangling tool call); once the store recovers the same session takes
    a new turn at once: the lease was released despite the failures."""
    store = FlakyStore()
    url = live_app(settings_for(simulator), sessions=store).url
    simulator.sim.script({"chunks": ["a", "b"]}, {"chunks": ["ok"]})
    store.fail("append", *range(1, 10))
    got = turn(http, url, "first")
    assert got.tokens == ["a", "b"] and got.last == {"error": STORE_ERROR_MESSAGE}
    assert contents(store.stored(got.session)) == [("user", "first", "complete")]
    store.fail("append")  # recovered
    nxt = turn(http, url, "second", got.session)
    assert nxt.last["lifecycle"] == "done"
    assert [m["content"] for m in store.stored(got.session)] == ["first", "second", "ok"]


def test_store_failing_on_the_tool_exchange_ends_the_turn_with_a_valid_history(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a model that calls the calculator and a store that fails the tool-exchange write
    THEN the client sees tool_call, tool_result, then `{"error"}`; the exchange is not stored
    (never a call without its result), so the history replays validly next turn."""
    store = FlakyStore()
    url = live_app(settings_for(simulator), sessions=store).url
    call = {"id": "call_1", "name": "calculator", "arguments": '{"expression": "6*7"}'}
    simulator.sim.script({"tool_calls": [call]}, {"chunks": ["next"]})
    store.fail("append", 1)  # the tool exchange (the prompt came with the session)
    got = turn(http, url, "6*7?")
    kinds = [next(iter(e)) for e in got.events]
    assert kinds == ["lifecycle", "tool_call", "tool_result", "error"]
    assert got.last == {"error": STORE_ERROR_MESSAGE}
    stored = store.stored(got.session)
    assert not any(m.get("tool_calls") or m["role"] == "tool" for m in stored)
    assert turn(http, url, "go on", got.session).last["lifecycle"] == "done"
    assert_valid_openai_history(simulator.log[-1]["body"]["messages"])


def test_store_failing_before_the_stream_is_a_503_json_error_and_nothing_is_left_locked(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a store that fails writing the user message of a turn on an existing session
    THEN the client gets 503 `{"error"}` with Retry-After before any model call, nothing is
    stored, and the retry the client then makes succeeds (the lease was given back)."""
    store = FlakyStore()
    url = live_app(settings_for(simulator), sessions=store).url
    simulator.sim.script({"chunks": ["one"]}, {"chunks": ["two"]})
    session = turn(http, url, "first").session
    store.fail("append", 1)
    refused = http.get(f"{url}/chat", params={"prompt": "second", "session": session})
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("application/json")
    assert refused.json() == {"error": "the session store is throttling requests"}
    assert refused.headers["retry-after"] == "1"
    assert len(simulator.log) == 1
    assert [m["content"] for m in store.stored(session)] == ["first", "one"]
    assert turn(http, url, "second", session).text == "two"


def test_store_failing_to_release_the_lease_still_closes_the_stream_after_done(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a store whose lease release fails once, then twice, after good turns
    THEN the client still gets every event through `done` and a cleanly closed stream, the
    reply is stored; one failure is retried (the session is free at once), two leave the
    session busy (409) only until the lease runs out, and the server serves other sessions."""
    store = FlakyStore()
    url = live_app(settings_for(simulator), sessions=store).url
    simulator.sim.script(
        {"chunks": ["fine"]}, {"chunks": ["again"]}, {"chunks": ["twice"]}, {"chunks": ["other"]}
    )
    store.fail("unlock", 1)
    got = turn(http, url, "hi")
    assert got.last["lifecycle"] == "done" and got.text == "fine"
    assert contents(store.stored(got.session))[-1] == ("assistant", "fine", "complete")
    assert turn(http, url, "again", got.session).text == "again"  # the retry freed it
    store.fail("unlock", 1, 2)
    assert turn(http, url, "twice", got.session).text == "twice"
    busy = http.get(f"{url}/chat", params={"prompt": "more", "session": got.session})
    assert busy.status_code == 409 and "in progress" in busy.json()["error"]
    assert turn(http, url, "new session").text == "other"


def test_client_leaving_during_a_slow_tool_leaves_the_turn_to_finish_whole(
    live_app: AppFactory,
) -> None:
    """GIVEN a model that says "Working" and calls a tool that takes 1 s
    WHEN the client reads the tool_call event and disconnects
    THEN the turn goes on (DESIGN §8 "Disconnect"): the tool finishes, the model answers, the
    store holds the whole exchange in a valid order, and the session takes a new turn."""
    store = FlakyStore()
    tool_started, tool_finished = threading.Event(), threading.Event()

    async def slow_lookup() -> str:
        """Takes a while."""
        tool_started.set()
        await anyio.sleep(1)
        tool_finished.set()
        return "late"

    model = FakeModel(
        [
            Step(tokens=["Working"], tool_calls=[ToolCall("t1", "slow_lookup", "{}")]),
            Step(tokens=["Found", " it"]),
            Step(tokens=["fresh"]),
        ]
    )
    tools = ToolRegistry([Tool.from_function(slow_lookup)])
    url = live_app(model=model, sessions=store, tools=tools).url
    session = ""
    with httpx.stream("GET", f"{url}/chat", params={"prompt": "look it up"}, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                session = event.get("session", session)
                if "tool_call" in event:
                    break
    assert tool_started.wait(2)
    assert tool_finished.wait(3), "the tool was cancelled when the client left"
    deadline = time.monotonic() + 3
    while len(store.stored(session)) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    stored = store.stored(session)
    assert contents(stored) == [
        ("user", "look it up", "complete"),
        ("assistant", "Working", "complete"),
        ("tool", "late", "complete"),
        ("assistant", "Found it", "complete"),
    ]
    with httpx.Client(timeout=10) as http:
        assert turn(http, url, "again", session).text == "fresh"
    assert_valid_openai_history(model.requests[-1])


def test_an_unexpected_error_in_the_turn_still_ends_with_an_error_event(
    live_app: AppFactory, http: httpx.Client
) -> None:
    """GIVEN a model adapter with a bug (it raises a plain exception mid-reply)
    THEN the client sees the tokens so far, then `{"error"}` last and a closed stream, no
    traceback; the partial reply is stored and the session and server keep working."""

    class BuggyModel(FakeModel):
        async def stream(self, messages: Sequence[Message], **kwargs: Any) -> Any:
            if len(self.requests) == 0:
                self.requests.append([])
                yield_from = super().stream(messages, **kwargs)
                yield await anext(yield_from)
                raise RuntimeError("bug: secret internals")
            async for event in super().stream(messages, **kwargs):
                yield event

    model = BuggyModel([Step(tokens=["part", "ial"]), Step(tokens=["ok"])])
    url = live_app(model=model).url
    got = turn(http, url, "hi")
    assert got.tokens == ["part"]
    assert set(got.last) == {"error"} and "secret" not in got.last["error"]
    stored = http.get(f"{url}/sessions/{got.session}").json()["messages"]
    assert contents(stored)[-1] == ("assistant", "part", "interrupted")
    assert turn(http, url, "again", got.session).text == "ok"
