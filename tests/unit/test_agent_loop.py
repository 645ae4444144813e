"""The agent loop with a scripted model and the in-memory store: no sockets."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from core.chat.turn import TurnLimits, TurnRequest, begin_turn
from core.errors import SessionBusy, StoreError, UpstreamError
from core.events import Done, Event, Failed, Started, Token, ToolCallStarted, ToolResult
from core.model.messages import ToolCall
from core.model.openai import message_json
from core.sessions.memory import MemorySessionStore
from core.tools.builtins import builtin_registry
from core.tools.registry import Tool, ToolRegistry
from tests.fakes import FakeModel, Step
from tests.history_rules import assert_valid_openai_history

TOOLS = builtin_registry(["calculator", "get_current_time"])


async def run(
    model: FakeModel,
    store: MemorySessionStore,
    prompt: str = "hi",
    session: str | None = None,
    tools: ToolRegistry = TOOLS,
    **limits: Any,
) -> list[Event]:
    turn = await begin_turn(
        TurnRequest(prompt=prompt, session_id=session, system_prompt="sys"),
        model=model,
        sessions=store,
        tools=tools,
        limits=TurnLimits(**limits),
    )
    return [event async for event in turn.events()]


async def stored(store: MemorySessionStore, session: str) -> list[dict[str, Any]]:
    loaded = await store.load(session, now=time.time())
    return [message_json(m) | {"status": m.status} for m in loaded.messages]


async def test_parallel_tool_calls_run_and_the_answer_streams_on() -> None:
    store = MemorySessionStore()
    calls = [
        ToolCall("c1", "calculator", '{"expression": "6*7"}'),
        ToolCall("c2", "get_current_time", '{"timezone": "UTC"}'),
    ]
    model = FakeModel([Step(tokens=["Let me check. "], tool_calls=calls), Step(tokens=["42", "!"])])
    events = await run(model, store, "6*7 and the time?")
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "Started",
        "Token",
        "ToolCallStarted",
        "ToolCallStarted",
        "ToolResult",
        "ToolResult",
        "Token",
        "Token",
        "Done",
    ]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert results[0].ok and "42" in results[0].output
    assert results[1].ok and "(UTC)" in results[1].output
    # The second request replays the exchange; the stored history is valid for the API.
    second = model.requests[1]
    assert second[-3]["tool_calls"][0]["id"] == "c1"
    assert [m["tool_call_id"] for m in second[-2:]] == ["c1", "c2"]
    assert_valid_openai_history(second)
    session = events[0].session  # type: ignore[union-attr]
    history = await stored(store, session)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert history[-1]["content"] == "42!"


async def test_tool_errors_go_back_to_the_model_not_the_client() -> None:
    store = MemorySessionStore()
    calls = [
        ToolCall("a", "calculator", '{"expression": '),
        ToolCall("b", "no_such_tool", "{}"),
        ToolCall("c", "calculator", '{"expression": "1/0"}'),
    ]
    model = FakeModel([Step(tool_calls=calls), Step(tokens=["Sorry."])])
    events = await run(model, store)
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [r.ok for r in results] == [False, False, False]
    assert "invalid arguments" in results[0].output
    assert "unknown tool" in results[1].output
    assert "division by zero" in results[2].output
    assert isinstance(events[-1], Done)
    assert [m["content"] for m in model.requests[1][-3:]] == [r.output for r in results]


async def test_a_model_looping_on_tools_hits_the_step_limit() -> None:
    store = MemorySessionStore()
    loop = [
        Step(tool_calls=[ToolCall(f"id{i}", "calculator", '{"expression": "1+1"}')])
        for i in range(10)
    ]
    model = FakeModel(loop)
    events = await run(model, store, max_tool_steps=3)
    assert isinstance(events[-1], Failed)
    assert "tool step limit reached" in events[-1].message
    assert sum(isinstance(e, ToolResult) for e in events) == 3
    assert len(model.requests) == 4
    history = await stored(store, events[0].session)  # type: ignore[union-attr]
    assert_valid_openai_history(history)


async def test_the_turn_after_a_tool_exchange_sends_a_valid_history() -> None:
    store = MemorySessionStore()
    model = FakeModel(
        [
            Step(tool_calls=[ToolCall("x1", "calculator", '{"expression": "2+2"}')]),
            Step(tokens=["4"]),
            Step(tokens=["again"]),
        ]
    )
    first = await run(model, store, "2+2?")
    session = first[0].session  # type: ignore[union-attr]
    await run(model, store, "and again?", session=session)
    assert_valid_openai_history(model.requests[-1])
    assert model.requests[-1][-1] == {"role": "user", "content": "and again?"}


async def test_a_tool_exchange_is_never_stored_half_when_the_client_leaves() -> None:
    store = MemorySessionStore()

    async def slow() -> str:
        """Takes a while."""
        await anyio.sleep(5)
        return "late"

    model = FakeModel([Step(tokens=["Working"], tool_calls=[ToolCall("s1", "slow", "{}")])])
    turn = await begin_turn(
        TurnRequest(prompt="go"),
        model=model,
        sessions=store,
        tools=ToolRegistry([Tool.from_function(slow)]),
        limits=TurnLimits(),
    )
    seen: list[Event] = []
    with anyio.move_on_after(0.3):
        async for event in turn.events():
            seen.append(event)
    assert isinstance(seen[-1], ToolCallStarted)
    history = await stored(store, turn.session_id)
    assert [(m["role"], m["content"], m["status"]) for m in history] == [
        ("user", "go", "complete"),
        ("assistant", "Working", "interrupted"),
    ]
    assert_valid_openai_history(history)
    # The lease was released: the next turn is accepted.
    await run(FakeModel([Step(tokens=["ok"])]), store, session=turn.session_id)


async def test_upstream_failure_mid_reply_keeps_the_partial_text() -> None:
    store = MemorySessionStore()
    model = FakeModel([Step(tokens=["a", "b", "c"], fail_after=2, error=UpstreamError("gone"))])
    events = await run(model, store)
    assert [e.text for e in events if isinstance(e, Token)] == ["a", "b"]
    assert events[-1] == Failed("gone")
    history = await stored(store, events[0].session)  # type: ignore[union-attr]
    assert history[-1]["content"] == "ab" and history[-1]["status"] == "interrupted"


async def test_a_store_failing_mid_turn_is_an_error_event_and_the_lease_is_freed() -> None:
    store = MemorySessionStore()
    real_append = store.append

    async def flaky_append(*args: Any, **kwargs: Any) -> int:
        # A new session's prompt is stored when it is created: the reply is the first append.
        raise StoreError("throttled")

    store.append = flaky_append  # type: ignore[method-assign]
    events = await run(FakeModel([Step(tokens=["x"])]), store)
    assert isinstance(events[0], Started)
    assert events[-1] == Failed("the conversation could not be saved; try again")
    store.append = real_append  # type: ignore[method-assign]
    await run(FakeModel([Step(tokens=["y"])]), store, session=events[0].session)  # type: ignore[union-attr]


async def test_a_second_turn_while_one_is_running_is_busy() -> None:
    store = MemorySessionStore()
    first = await run(FakeModel([Step(tokens=["x"])]), store)
    session = first[0].session  # type: ignore[union-attr]
    running = await begin_turn(
        TurnRequest(prompt="one", session_id=session),
        model=FakeModel([]),
        sessions=store,
        tools=TOOLS,
        limits=TurnLimits(),
    )
    with pytest.raises(SessionBusy):
        await run(FakeModel([]), store, "two", session=session)
    assert [e async for e in running.events()][-1] == Done("stop", running.outcome.usage)
