"""Reasoning models: streamed, kept apart from the reply, stored, replayed where required.

The OpenAI adapter runs against `httpx.MockTransport` (no sockets): each test writes the
provider's SSE body itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from core.chat.turn import TurnLimits, TurnRequest, begin_turn
from core.events import Done, Event, Failed, Reasoning, Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall
from core.model.openai import OpenAIChatModel
from core.model.port import Completion, ModelEvent
from core.sessions.memory import MemorySessionStore
from core.tools.builtins import builtin_registry
from handlers.sse import payload
from tests.fakes import openai_model_over


def sse(*chunks: dict[str, Any] | str) -> bytes:
    lines = []
    for chunk in chunks:
        data = chunk if isinstance(chunk, str) else json.dumps(chunk)
        lines.append(f"data: {data}\n\n")
    return "".join(lines).encode()


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}


def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    fragment = {"index": index, "id": call_id, "function": {"name": name, "arguments": arguments}}
    return delta(tool_calls=[fragment])


class Provider:
    """A scripted OpenAI-compatible endpoint: one SSE body per request; records the bodies."""

    def __init__(self, *bodies: bytes) -> None:
        self.bodies = list(bodies)
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content))
        return httpx.Response(
            200, content=self.bodies.pop(0), headers={"content-type": "text/event-stream"}
        )

    def model(self, **options: Any) -> OpenAIChatModel:
        return openai_model_over(self, model="reasoner", **options)


async def collect(model: OpenAIChatModel, messages: Sequence[Message] = ()) -> list[ModelEvent]:
    history = list(messages) or [Message(role="user", content="hi")]
    return [event async for event in model.stream(history)]


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_either_field_name_streams_as_reasoning_never_as_content(field: str) -> None:
    provider = Provider(
        sse(
            delta(role="assistant", content=""),
            delta(**{field: "Let me"}),
            delta(**{field: " think."}),
            delta(content="Hello"),
            finish("stop"),
            "[DONE]",
        )
    )
    events = await collect(provider.model())
    assert events[:3] == [Reasoning("Let me"), Reasoning(" think."), Token("Hello")]
    assert isinstance(events[-1], Completion)


async def test_reasoning_tool_call_reasoning_tokens_keep_their_order() -> None:
    provider = Provider(
        sse(
            delta(reasoning_content="First I need a sum."),
            call(0, "c1", "calculator", '{"expression"'),
            delta(reasoning_content=" Still thinking."),
            call(0, "", "", ': "6*7"}'),
            delta(content="Calling"),
            finish("tool_calls"),
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": 30,
                    "completion_tokens_details": {"reasoning_tokens": 21},
                },
            },
            "[DONE]",
        )
    )
    events = await collect(provider.model())
    assert events[:4] == [
        Reasoning("First I need a sum."),
        ToolCallStarted("c1", "calculator"),
        Reasoning(" Still thinking."),
        Token("Calling"),
    ]
    completion = events[-1]
    assert isinstance(completion, Completion)
    assert completion.tool_calls == (ToolCall("c1", "calculator", '{"expression": "6*7"}'),)
    assert completion.usage == Usage(12, 30, 21)


async def test_usage_without_details_reports_no_reasoning_tokens() -> None:
    provider = Provider(
        sse(
            delta(content="x"),
            finish("stop"),
            {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
            "[DONE]",
        )
    )
    completion = (await collect(provider.model()))[-1]
    assert isinstance(completion, Completion) and completion.usage.reasoning_tokens is None
    assert "reasoning_tokens" not in payload(Done("stop", completion.usage))["usage"]
    assert payload(Done("stop", Usage(1, 5, 4)))["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 5,
        "reasoning_tokens": 4,
    }
    assert payload(Reasoning("hmm")) == {"reasoning": "hmm"}


HISTORY = [
    Message(role="user", content="6*7?"),
    Message(
        role="assistant",
        content="",
        tool_calls=(ToolCall("c1", "calculator", '{"expression": "6*7"}'),),
        reasoning="Use the calculator.",
    ),
    Message(role="tool", content="42", tool_call_id="c1", name="calculator"),
    Message(role="assistant", content="42", reasoning="It said 42."),
    Message(role="user", content="And doubled?"),
]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        # auto: only where DeepSeek's API requires it, an assistant message that called tools
        ("auto", [None, "Use the calculator.", None, None, None]),
        ("always", [None, "Use the calculator.", None, "It said 42.", None]),
        ("never", [None, None, None, None, None]),
    ],
)
async def test_replayed_history_carries_reasoning_per_reasoning_history(
    setting: str, expected: list[str | None]
) -> None:
    provider = Provider(sse(delta(content="84"), finish("stop"), "[DONE]"))
    await collect(provider.model(reasoning_history=setting), HISTORY)
    sent = provider.requests[0]["messages"]
    assert [m.get("reasoning_content") for m in sent] == expected
    assert all("reasoning" not in m for m in sent)  # the content never carries it either
    assert [m["content"] for m in sent] == ["6*7?", None, "42", "42", "And doubled?"]


async def test_reasoning_effort_is_sent_only_when_set() -> None:
    provider = Provider(*[sse(delta(content="x"), finish("stop"), "[DONE]")] * 2)
    await collect(provider.model(reasoning_effort="low"))
    await collect(provider.model())
    assert provider.requests[0]["reasoning_effort"] == "low"
    assert "reasoning_effort" not in provider.requests[1]


# --- the turn ---------------------------------------------------------------------------------


class ReasoningModel:
    """Scripted model steps of (kind, text) events, optionally failing at the end of one."""

    name = "reasoner"

    def __init__(self, *steps: list[ModelEvent], fail_after_step: int | None = None) -> None:
        self.steps = list(steps)
        self.fail_after_step = fail_after_step
        self.calls = 0

    async def stream(self, messages: Sequence[Message], **_: Any) -> Any:
        from core.errors import UpstreamProtocolError

        self.calls += 1
        for event in self.steps.pop(0):
            yield event
        if self.fail_after_step == self.calls:
            raise UpstreamProtocolError("the model provider closed the stream before it finished")


async def run(model: Any, store: MemorySessionStore) -> tuple[list[Event], list[Message]]:
    turn = await begin_turn(
        TurnRequest(prompt="think", system_prompt="sys"),
        model=model,
        sessions=store,
        tools=builtin_registry(["calculator"]),
        limits=TurnLimits(),
    )
    events = [event async for event in turn.events()]
    loaded = await store.load(turn.session_id, now=time.time())
    return events, list(loaded.messages)


async def test_the_turn_relays_reasoning_in_order_and_stores_it_beside_each_message() -> None:
    store = MemorySessionStore()
    calc = ToolCall("c1", "calculator", '{"expression": "6*7"}')
    model = ReasoningModel(
        [
            Reasoning("Need a sum."),
            ToolCallStarted("c1", "calculator"),
            Completion("tool_calls", Usage(5, 9, 6), (calc,)),
        ],
        [
            Reasoning("It is 42."),
            Token("42"),
            Completion("stop", Usage(8, 4, 3)),
        ],
    )
    events, stored = await run(model, store)
    relayed = [e for e in events if isinstance(e, Reasoning | Token | ToolCallStarted)]
    assert relayed == [
        Reasoning("Need a sum."),
        ToolCallStarted("c1", "calculator"),
        Reasoning("It is 42."),
        Token("42"),
    ]
    assert events[-1] == Done("stop", Usage(13, 13, 9))
    assert [(m.role, m.content, m.reasoning) for m in stored] == [
        ("user", "think", ""),
        ("assistant", "", "Need a sum."),
        ("tool", "6*7 = 42", ""),
        ("assistant", "42", "It is 42."),
    ]
    assert stored[-1].to_public()["reasoning"] == "It is 42."


async def test_a_cut_mid_reasoning_is_stored_interrupted_with_the_reasoning_so_far() -> None:
    store = MemorySessionStore()
    model = ReasoningModel([Reasoning("First, "), Reasoning("the units")], fail_after_step=1)
    events, stored = await run(model, store)
    assert isinstance(events[-1], Failed)
    assert [e for e in events if isinstance(e, Reasoning)] == [
        Reasoning("First, "),
        Reasoning("the units"),
    ]
    assert (stored[-1].content, stored[-1].reasoning, stored[-1].status) == (
        "",
        "First, the units",
        "interrupted",
    )
