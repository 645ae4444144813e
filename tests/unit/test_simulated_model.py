"""The in-process simulated model: what it answers, at what pace, within the deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import pytest

from core.errors import TurnDeadline
from core.events import Token, ToolCallStarted
from core.model.messages import Message, ToolCall, ToolSpec
from core.model.port import Completion, ModelEvent, is_simulated
from core.model.simulated import SimulatedChatModel, decide, find_expression, split_words
from core.tools.builtins import builtin_registry

TOOLS = builtin_registry(["calculator", "get_current_time"]).specs


def conversation(prompt: str) -> list[Message]:
    return [Message(role="system", content="Be brief."), Message(role="user", content=prompt)]


async def collect(
    model: SimulatedChatModel,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec] = TOOLS,
    deadline: float | None = None,
) -> list[ModelEvent]:
    return [e async for e in model.stream(messages, tools=tools, deadline=deadline)]


async def test_text_streams_word_by_word_and_ends_with_one_completion() -> None:
    events = await collect(SimulatedChatModel(token_delay_ms=0), conversation("Tell me a joke"))
    *deltas, completion = events
    assert all(isinstance(e, Token) for e in deltas) and len(deltas) > 5
    text = "".join(e.text for e in deltas if isinstance(e, Token))
    assert "built-in simulator" in text and "“Tell me a joke”" in text
    assert isinstance(completion, Completion)
    assert completion.finish_reason == "stop" and completion.tool_calls == ()
    assert completion.usage.completion_tokens == len(deltas)
    assert completion.usage.prompt_tokens == 2 + 4  # words of the system and user messages


async def test_arithmetic_calls_the_calculator() -> None:
    events = await collect(SimulatedChatModel(token_delay_ms=0), conversation("What is 6*7?"))
    began, completion = events
    assert isinstance(began, ToolCallStarted) and began.name == "calculator"
    assert isinstance(completion, Completion) and completion.finish_reason == "tool_calls"
    (call,) = completion.tool_calls
    assert (call.id, call.name) == (began.id, "calculator")
    assert json.loads(call.arguments) == {"expression": "6*7"}


async def test_a_time_question_calls_get_current_time_with_the_named_zone() -> None:
    model = SimulatedChatModel(token_delay_ms=0)
    events = await collect(model, conversation("What time is it in Europe/Oslo?"))
    completion = events[-1]
    assert isinstance(completion, Completion)
    (call,) = completion.tool_calls
    assert call.name == "get_current_time"
    assert json.loads(call.arguments) == {"timezone": "Europe/Oslo"}


async def test_undeclared_tools_are_never_called() -> None:
    events = await collect(SimulatedChatModel(token_delay_ms=0), conversation("6*7?"), tools=())
    completion = events[-1]
    assert isinstance(completion, Completion) and completion.tool_calls == ()
    assert all(isinstance(e, Token) for e in events[:-1])


async def test_tool_results_are_summed_up() -> None:
    calls = (
        ToolCall(id="c1", name="calculator", arguments="{}"),
        ToolCall(id="c2", name="get_current_time", arguments="{}"),
    )
    messages = [
        *conversation("What is 6*7 and the time?"),
        Message(role="assistant", content="", tool_calls=calls),
        Message(role="tool", content="42", tool_call_id="c1", name="calculator"),
        Message(role="tool", content='{"result": "12:00 UTC"}', tool_call_id="c2"),
    ]
    events = await collect(SimulatedChatModel(token_delay_ms=0), messages)
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert text == "The calculator says **42**. The current time is **12:00 UTC**."


async def test_tokens_are_paced_by_the_delay() -> None:
    model = SimulatedChatModel(token_delay_ms=20)
    started = time.monotonic()
    times = []
    async for _event in model.stream(conversation("Hello there"), tools=TOOLS):
        times.append(time.monotonic() - started)
    words = len(times) - 1
    assert words > 10
    assert times[-2] >= words * 0.020 * 0.9  # never faster than the delay asks
    assert times[0] >= 0.015


async def test_the_deadline_ends_the_stream_with_turn_deadline() -> None:
    model = SimulatedChatModel(token_delay_ms=50)
    started = time.monotonic()
    received: list[ModelEvent] = []
    with pytest.raises(TurnDeadline):
        async for event in model.stream(
            conversation("Hello there"), tools=TOOLS, deadline=started + 0.2
        ):
            received.append(event)
    elapsed = time.monotonic() - started
    assert 0.18 <= elapsed < 0.5
    assert 2 <= len(received) <= 4 and not any(isinstance(e, Completion) for e in received)


async def test_a_past_deadline_ends_it_even_with_no_delay() -> None:
    with pytest.raises(TurnDeadline):
        await collect(
            SimulatedChatModel(token_delay_ms=0), conversation("hi"), deadline=time.monotonic()
        )


def test_it_says_it_is_simulated() -> None:
    model = SimulatedChatModel()
    assert model.name == "simulator"
    assert is_simulated(model)
    assert not is_simulated(object())


@pytest.mark.parametrize(
    ("prompt", "tools", "expected"),
    [
        ("What is 6*7?", {"calculator"}, ("calculator", {"expression": "6*7"})),
        ("What is 6*7?", set(), None),
        ("What time is it in Europe/Oslo?", {"calculator", "get_current_time"},
         ("get_current_time", {"timezone": "Europe/Oslo"})),
        ("what's the date today", {"get_current_time"}, ("get_current_time", {"timezone": "UTC"})),
        ("what time is it", {"calculator"}, None),
        ("Hello there", {"calculator", "get_current_time"}, None),
    ],
)  # fmt: skip
def test_decide(prompt: str, tools: set[str], expected: tuple[str, dict[str, str]] | None) -> None:
    decision = decide(conversation(prompt), tools)
    if expected is None:
        assert decision.tool_calls == () and "built-in simulator" in decision.text
    else:
        (call,) = decision.tool_calls
        assert (call.name, json.loads(call.arguments)) == expected


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("What is 6*7?", "6*7"),
        ("compute (2 + 3) * 4.5 please", "(2 + 3) * 4.5"),
        ("2**10", "2**10"),
        ("what is 10 % 3.", "10 % 3"),
        ("(what is 1+1)", "1+1"),
        ("I have 3 apples", None),
        ("on 2024-01-05", None),
        ("-", None),
    ],
)
def test_find_expression(text: str, expression: str | None) -> None:
    assert find_expression(text) == expression


def test_split_words_is_lossless_on_the_hello() -> None:
    text = decide(conversation("ünïcode  spaces\tand\nlines"), set()).text
    assert "".join(split_words(text)) == text
