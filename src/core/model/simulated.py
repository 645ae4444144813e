"""The in-process simulated model: a deterministic demo "agent" behind the `ChatModel` port.

With no API key the app answers with it: no HTTP, no state shared between users, nothing to
control from outside. It calls the calculator for arithmetic, get_current_time for questions
about the time, sums up tool results, and otherwise says hello. `decide` is the pure choice;
the HTTP simulator (tests, bench) answers with the same when nothing is scripted.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from core.errors import TurnDeadline
from core.events import Reasoning, Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall, ToolSpec
from core.model.port import Completion, ModelEvent

SIMULATED_MODEL_NAME = "simulator"

_WORDISH = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")
_EXPRESSION_RUN = re.compile(r"[-+*/%().\d\s]+")
_BINARY_OP = re.compile(r"[\d.)]\s*(?:\*\*|[-+*/%])\s*[-+(.\d]")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ASKS_TIME = re.compile(r"\b(?:time|date|clock)\b", re.IGNORECASE)
_IANA_ZONE = re.compile(
    r"\b(?:Africa|America|Antarctica|Arctic|Asia|Atlantic|Australia|Europe|Indian|Pacific|Etc)"
    r"/[A-Za-z_+-]+(?:/[A-Za-z_+-]+)?"
)
_ASKS_TO_THINK = re.compile(r"\b(?:think|reason)", re.IGNORECASE)
_ECHO_LIMIT = 200


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A tool call the simulated model decided on; `arguments` is JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the simulated model answers: text, or tool calls."""

    text: str = ""
    tool_calls: tuple[PlannedCall, ...] = ()
    reasoning: str = ""  # streamed first, as a reasoning model does


def split_words(text: str) -> list[str]:
    """Split text into word-ish chunks that keep their leading spaces: "Hi you!" -> Hi, " you", !.

    Lossless: `"".join(split_words(t)) == t` for every string.
    """
    return _WORDISH.findall(text)


def find_expression(text: str) -> str | None:
    """The first arithmetic expression in text (digits and at least one operator), if any."""
    for match in _EXPRESSION_RUN.finditer(text):
        candidate = match.group().strip().rstrip(".").strip()
        while candidate.endswith(")") and candidate.count(")") > candidate.count("("):
            candidate = candidate[:-1].rstrip()
        while candidate.startswith("(") and candidate.count("(") > candidate.count(")"):
            candidate = candidate[1:].lstrip()
        if _BINARY_OP.search(candidate) and not _ISO_DATE.search(candidate):
            return candidate
    return None


def hello(prompt: str) -> str:
    """The plain answer: says it is the simulator and echoes (the start of) the prompt."""
    echo = prompt if len(prompt) <= _ECHO_LIMIT else prompt[:_ECHO_LIMIT] + "…"
    return (
        "Hello from the **built-in simulator** (no `OPENAI_API_KEY` is set, so no real model "
        f"is called). You said: “{echo}”. Set `OPENAI_API_KEY` to talk to a real model."
    )


def decide(messages: Sequence[Message], tools: Collection[str]) -> Decision:
    """The answer to a conversation, given the names of the tools declared to the model.

    After tool results: a sentence per result. Otherwise, for the last user message:
    arithmetic -> calculator, a question about the time -> get_current_time (each only when
    declared), anything else -> `hello`.
    """
    if messages and messages[-1].role == "tool":
        last_assistant = max(
            (i for i, m in enumerate(messages) if m.role == "assistant"), default=-1
        )
        names: dict[str, str] = {}
        if last_assistant >= 0:
            names = {call.id: call.name for call in messages[last_assistant].tool_calls}
        summaries = [
            tool_summary(m.name or names.get(m.tool_call_id or "", "tool"), m.content)
            for m in messages[last_assistant + 1 :]
            if m.role == "tool"
        ]
        return Decision(text=" ".join(summaries))

    prompt = next((m.content for m in reversed(messages) if m.role == "user"), "")
    thought = think(prompt, tools) if _ASKS_TO_THINK.search(prompt) else ""
    if "calculator" in tools:
        expression = find_expression(prompt)
        if expression is not None:
            arguments = json.dumps({"expression": expression})
            return Decision(tool_calls=(PlannedCall("calculator", arguments),), reasoning=thought)
    if "get_current_time" in tools and _ASKS_TIME.search(prompt):
        zone = _IANA_ZONE.search(prompt)
        arguments = json.dumps({"timezone": zone.group() if zone else "UTC"})
        return Decision(tool_calls=(PlannedCall("get_current_time", arguments),), reasoning=thought)
    return Decision(text=hello(prompt), reasoning=thought)


def think(prompt: str, tools: Collection[str]) -> str:
    """The simulated reasoning for a prompt that asks for it ("think", "reason"): what a
    reasoning model streams before its answer, so the whole path shows offline."""
    words = len(prompt.split())
    expression = find_expression(prompt) if "calculator" in tools else None
    plan = (
        f"There is arithmetic in it ({expression}), so I will use the calculator rather than guess."
        if expression
        else "Nothing in it needs a tool, so I will answer directly."
    )
    return (
        f"The user asks me to think first. Their message has {words} words. {plan} "
        "(This reasoning comes from the built-in simulator, not from a model.)"
    )


def tool_summary(name: str, output: str) -> str:
    """One sentence about a tool's output (`{"error"}` and `{"result"}` objects unwrapped)."""
    try:
        parsed: Any = json.loads(output)
    except ValueError:
        parsed = output
    if isinstance(parsed, dict):
        if "error" in parsed:
            return f"The `{name}` tool reported an error: {parsed['error']}."
        if "result" in parsed:
            parsed = parsed["result"]
    value = parsed if isinstance(parsed, str) else json.dumps(parsed, ensure_ascii=False)
    if name == "calculator":
        return f"The calculator says **{value}**."
    if name == "get_current_time":
        return f"The current time is **{value}**."
    return f"The `{name}` tool returned **{value}**."


class SimulatedChatModel:
    """`ChatModel` answering with `decide`, a word per `token_delay_ms`, in this process.

    Its usage counts words (prompt: every message's words; completion: chunks sent).
    """

    simulated = True

    def __init__(self, *, token_delay_ms: float = 25.0, name: str = SIMULATED_MODEL_NAME) -> None:
        self._delay = max(0.0, token_delay_ms) / 1000
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        deadline: float | None = None,
    ) -> AsyncGenerator[ModelEvent, None]:
        decision = decide(messages, [tool.name for tool in tools])
        thoughts = split_words(decision.reasoning)
        pieces = split_words(decision.text)
        next_at = time.monotonic()
        for thought in thoughts:
            next_at = await self._pace(next_at, deadline)
            yield Reasoning(thought)
        for piece in pieces:
            next_at = await self._pace(next_at, deadline)
            yield Token(piece)
        calls = tuple(
            ToolCall(id=f"call_{secrets.token_hex(12)}", name=c.name, arguments=c.arguments)
            for c in decision.tool_calls
        )
        for call in calls:
            next_at = await self._pace(next_at, deadline)
            yield ToolCallStarted(id=call.id, name=call.name)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        yield Completion(
            finish_reason="tool_calls" if calls else "stop",
            usage=Usage(
                prompt_tokens,
                len(thoughts) + len(pieces) + len(calls),
                len(thoughts) if thoughts else None,
            ),
            tool_calls=calls,
        )

    async def _pace(self, next_at: float, deadline: float | None) -> float:
        """Wait for the next chunk's moment; `TurnDeadline` rather than wait past `deadline`."""
        next_at += self._delay
        if deadline is not None and next_at >= deadline:
            await anyio.sleep(max(deadline - time.monotonic(), 0.0))
            raise TurnDeadline()
        wait = next_at - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
        return next_at
