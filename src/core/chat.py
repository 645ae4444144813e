"""One chat turn: checks, the agent loop over the model and tools, persistence, typed events.

`begin_turn` does everything that can refuse a request (bad prompt, unknown or busy session)
before any model call, so handlers can answer with a 4xx. `Turn.events()` then streams.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from core.errors import (
    ChatError,
    InvalidRequest,
    PromptTooLong,
    SessionBusy,
    SessionConflict,
    StoreError,
    TurnDeadline,
    UpstreamError,
)
from core.events import Done, Event, Failed, Started, Token, ToolCallStarted, ToolResult, Usage
from core.messages import Message, Status
from core.ports import (
    ChatModel,
    Completion,
    SessionStore,
    TextDelta,
    ToolCallBegan,
    is_simulated,
)
from core.session_ids import check_session_id, new_session_id
from core.tools import ToolRegistry

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class TurnRequest:
    prompt: str
    session_id: str | None = None
    system_prompt: str = ""


@dataclass(frozen=True, slots=True)
class TurnLimits:
    max_prompt_chars: int = 16_000
    history_messages: int = 50
    max_tool_steps: int = 5
    tool_timeout_seconds: float = 10.0
    turn_timeout_seconds: float = 120.0


@dataclass(slots=True)
class TurnOutcome:
    """What happened, for the one log line and the metrics a turn emits."""

    status: Status | None = None
    usage: Usage = field(default_factory=Usage)
    tokens_out: int = 0
    first_token_seconds: float | None = None
    error: str | None = None


def check_prompt(prompt: object, max_chars: int) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string")
    if not prompt.strip():
        raise InvalidRequest("prompt is required")
    if len(prompt) > max_chars:
        raise PromptTooLong(f"prompt is longer than {max_chars} characters")
    return prompt


async def begin_turn(
    request: TurnRequest,
    *,
    model: ChatModel,
    sessions: SessionStore,
    tools: ToolRegistry,
    limits: TurnLimits,
    deadline: float | None = None,
    wall_clock: Clock = time.time,
) -> Turn:
    """Check the request, take the session's turn lease and store the user message.

    Raises `RequestError` subclasses (400/404/409/413) before any model call.
    """
    prompt = check_prompt(request.prompt, limits.max_prompt_chars)
    now = wall_clock()
    if request.session_id is None:
        session_id = new_session_id()
        await sessions.create(session_id, title=_title(prompt), now=now)
    else:
        session_id = check_session_id(request.session_id)
    owner = secrets.token_hex(8)
    await sessions.lock(
        session_id, owner=owner, now=now, lease_seconds=limits.turn_timeout_seconds + 30
    )
    try:
        session = await sessions.load(session_id, now=now, limit=limits.history_messages)
        user = Message(role="user", content=prompt, created_at=now)
        next_seq = await sessions.append(session_id, [user], seq=session.next_seq, now=now)
    except SessionConflict as exc:
        await sessions.unlock(session_id, owner=owner)
        raise SessionBusy() from exc
    except BaseException:
        await sessions.unlock(session_id, owner=owner)
        raise
    history: list[Message] = []
    if request.system_prompt:
        history.append(Message(role="system", content=request.system_prompt))
    history.extend(session.messages)
    history.append(user)
    turn_deadline = time.monotonic() + limits.turn_timeout_seconds
    return Turn(
        session_id=session_id,
        model=model,
        sessions=sessions,
        tools=tools,
        limits=limits,
        messages=history,
        next_seq=next_seq,
        owner=owner,
        deadline=turn_deadline if deadline is None else min(deadline, turn_deadline),
        wall_clock=wall_clock,
    )


def _title(prompt: str) -> str:
    line = " ".join(prompt.split())
    return line if len(line) <= 80 else line[:79] + "…"


@dataclass
class Turn:
    """A turn that passed every check: the session is leased and the user message stored."""

    session_id: str
    model: ChatModel
    sessions: SessionStore
    tools: ToolRegistry
    limits: TurnLimits
    messages: list[Message]
    next_seq: int
    owner: str
    deadline: float
    wall_clock: Clock = time.time
    outcome: TurnOutcome = field(default_factory=TurnOutcome)
    _released: bool = False

    async def events(self) -> AsyncGenerator[Event, None]:
        """Stream the turn. The last event is `Done` or `Failed`; the lease is always released.

        Whatever happens (done, failure, client gone), the reply so far is stored with its
        status, and a tool exchange is stored whole or not at all.
        """
        started_at = time.monotonic()
        parts: list[str] = []
        status: Status | None = None  # set once the reply is stored
        outcome = self.outcome
        try:
            yield Started(
                session=self.session_id,
                model=self.model.name,
                simulated=is_simulated(self.model),
            )
            steps = 0
            while True:
                completion: Completion | None = None
                # aclosing: if this turn stops early, the upstream request closes now, not
                # whenever the garbage collector finalises the generator.
                async with contextlib.aclosing(
                    self.model.stream(self.messages, tools=self.tools.specs, deadline=self.deadline)
                ) as model_events:
                    async for event in model_events:
                        if isinstance(event, TextDelta):
                            if outcome.first_token_seconds is None:
                                outcome.first_token_seconds = time.monotonic() - started_at
                            parts.append(event.text)
                            outcome.tokens_out += 1
                            yield Token(event.text)
                        elif isinstance(event, ToolCallBegan):
                            yield ToolCallStarted(id=event.id, name=event.name)
                        else:
                            completion = event
                assert completion is not None, "ChatModel.stream ends with a Completion"
                outcome.usage += completion.usage
                if not completion.tool_calls:
                    await self._store_reply(parts, "complete")
                    status = "complete"
                    await self._release(status)
                    yield Done(finish_reason=completion.finish_reason, usage=outcome.usage)
                    return
                if steps >= self.limits.max_tool_steps:
                    outcome.error = "tool step limit reached"
                    status = _cut_short(parts)
                    await self._store_reply(parts, status)
                    await self._release(status)
                    yield Failed(
                        f"tool step limit reached ({self.limits.max_tool_steps} steps); "
                        "ask a simpler question or raise MAX_TOOL_STEPS"
                    )
                    return
                steps += 1
                call_message = Message(
                    role="assistant",
                    content="".join(parts),
                    created_at=self.wall_clock(),
                    tool_calls=completion.tool_calls,
                )
                results = await self.tools.run_all(
                    completion.tool_calls,
                    timeout=min(
                        self.limits.tool_timeout_seconds,
                        max(self.deadline - time.monotonic(), 0.0),
                    ),
                )
                if time.monotonic() >= self.deadline:
                    raise TurnDeadline()
                exchange = [call_message]
                for call, result in zip(completion.tool_calls, results, strict=True):
                    yield ToolResult(id=call.id, name=call.name, ok=result.ok, output=result.output)
                    exchange.append(
                        Message(
                            role="tool",
                            content=result.output,
                            created_at=self.wall_clock(),
                            tool_call_id=call.id,
                            name=call.name,
                        )
                    )
                # The assistant's tool calls and every answer land in one atomic append:
                # a replayed history never holds a tool call without its result.
                await self._append(exchange)
                self.messages.extend(exchange)
                parts = []
        except ChatError as exc:
            outcome.error = str(exc)
            status = _cut_short(parts)
            await self._store_reply(parts, status, quiet=True)
            await self._release(status)
            yield Failed(_failure_message(exc))
        finally:
            with anyio.CancelScope(shield=True):
                if status is None:
                    # The client went away (or the server is stopping): keep what was relayed.
                    status = "interrupted"
                    await self._store_reply(parts, status, quiet=True)
                await self._release(status)

    async def _release(self, status: Status) -> None:
        """Record the outcome and free the session, before the last event goes out: a client
        that sends its next prompt on `done` must not find the session busy."""
        self.outcome.status = status
        if self._released:
            return
        self._released = True
        # If the release fails, the lease runs out by itself; the stream must still close.
        with contextlib.suppress(StoreError):
            await self.sessions.unlock(self.session_id, owner=self.owner)

    async def _append(self, messages: Sequence[Message]) -> None:
        self.next_seq = await self.sessions.append(
            self.session_id, messages, seq=self.next_seq, now=self.wall_clock()
        )

    async def _store_reply(self, parts: list[str], status: Status, *, quiet: bool = False) -> None:
        """Store the assistant's text; an empty interrupted or failed reply still marks the turn."""
        message = Message(
            role="assistant", content="".join(parts), status=status, created_at=self.wall_clock()
        )
        try:
            await self._append([message])
        except ChatError:
            if not quiet:
                raise


def _cut_short(parts: list[str]) -> Status:
    """A reply that had started is `interrupted` (its text kept); one that never did `failed`."""
    return "interrupted" if parts else "failed"


def _failure_message(exc: ChatError) -> str:
    if isinstance(exc, UpstreamError):
        return str(exc)
    if isinstance(exc, StoreError):
        return "the conversation could not be saved; try again"
    return str(exc)
