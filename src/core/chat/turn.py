"""One chat turn: checks, the agent loop over the model and tools, persistence, typed events.

`begin_turn` does everything that can refuse a request (bad prompt, unknown or busy session)
before any model call, so handlers can answer with a 4xx. `Turn.events()` then streams.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from core.chat.context import (
    TokenCounter,
    estimate_tokens,
    fit,
    message_tokens,
    replayable,
    split_turns,
)
from core.errors import (
    ChatError,
    ContextTooLong,
    InvalidRequest,
    PromptTooLong,
    ReplyTooLong,
    SessionBusy,
    SessionConflict,
    StoreError,
    TooManyToolCalls,
    TurnDeadline,
)
from core.events import (
    Done,
    Event,
    Failed,
    Reasoning,
    Started,
    Token,
    ToolCallStarted,
    ToolResult,
    Usage,
)
from core.model.messages import Message, Status
from core.model.port import ChatModel, Completion, is_simulated
from core.sessions.ids import check_session_id, new_session_id, new_turn_id
from core.sessions.port import SessionStore
from core.sessions.rules import MAX_MESSAGE_BYTES, is_valid_unicode, truncate_utf8
from core.tools.registry import ToolRegistry

Clock = Callable[[], float]
logger = logging.getLogger("sse_chat_agent")
_MESSAGE_TOO_LONG = (
    "the message is too long for the model's context window, even without earlier messages; "
    "send a shorter one"
)


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
    max_tool_calls_per_step: int = 16
    context_tokens: int | None = None  # the model's context window; None: no token budget
    reply_tokens: int = 1024  # room kept for the reply (MAX_TOKENS)


@dataclass(slots=True)
class TurnOutcome:
    """What happened, for the one log line and the metrics a turn emits."""

    status: Status | None = None
    usage: Usage = field(default_factory=Usage)
    chunks_out: int = 0  # content deltas relayed (a provider may put several tokens in one)
    first_token_seconds: float | None = None
    error: str | None = None


def check_prompt(prompt: object, max_chars: int) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string")
    if not prompt.strip():
        raise InvalidRequest("prompt is required")
    if len(prompt) > max_chars:
        raise PromptTooLong(f"prompt is longer than {max_chars} characters")
    if not is_valid_unicode(prompt):
        raise InvalidRequest("prompt is not valid Unicode (it holds a lone surrogate)")
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
    count_tokens: TokenCounter = estimate_tokens,
    turn_id: str | None = None,
    new_session: str | None = None,
) -> Turn:
    """Check the request, take the session's turn lease and store the user message.

    `turn_id` (default: a new one) also owns the session's lease, so whoever finds the turn
    lost can release it; `new_session` is the id a new session gets (default: a new one).
    Raises `RequestError` subclasses (400/404/409/413) before any model call.
    """
    prompt = check_prompt(request.prompt, limits.max_prompt_chars)
    now = wall_clock()
    owner = turn_id or new_turn_id(now)
    lease_seconds = limits.turn_timeout_seconds + 30
    user = Message(role="user", content=prompt, created_at=now)
    past: Sequence[Message] = ()
    if request.session_id is None:
        session_id = new_session or new_session_id()
        # Created leased and holding the prompt, in one write, under a fresh random id: there
        # is nothing to load, and the prompt needs no append of its own (one store round trip
        # before a new session's first byte, where a create and an append took two).
        await sessions.create(
            session_id,
            title=_title(prompt),
            now=now,
            owner=owner,
            lease_seconds=lease_seconds,
            messages=[user],
        )
        next_seq = 1
    else:
        session_id = check_session_id(request.session_id)
        await sessions.lock(session_id, owner=owner, now=now, lease_seconds=lease_seconds)
        try:
            session = await sessions.load(session_id, now=now, limit=limits.history_messages)
            next_seq = await sessions.append(session_id, [user], seq=session.next_seq, now=now)
        except SessionConflict as exc:
            await sessions.unlock(session_id, owner=owner)
            raise SessionBusy() from exc
        except BaseException:
            await sessions.unlock(session_id, owner=owner)
            raise
        past = session.messages
    system = (
        [Message(role="system", content=request.system_prompt)] if request.system_prompt else []
    )

    turn_deadline = time.monotonic() + limits.turn_timeout_seconds
    return Turn(
        session_id=session_id,
        model=model,
        sessions=sessions,
        tools=tools,
        limits=limits,
        system=system,
        past=split_turns(replayable(past)),
        current=[user],
        next_seq=next_seq,
        owner=owner,
        turn_id=owner,
        deadline=turn_deadline if deadline is None else min(deadline, turn_deadline),
        wall_clock=wall_clock,
        count_tokens=count_tokens,
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
    system: list[Message]
    past: list[list[Message]]  # earlier turns that may be replayed, oldest first
    current: list[Message]  # this turn: the user message, then its tool exchanges
    next_seq: int
    owner: str
    deadline: float
    wall_clock: Clock = time.time
    count_tokens: TokenCounter = estimate_tokens
    # A smaller context window the provider stated when it refused this turn's request.
    stated_window: int | None = None
    outcome: TurnOutcome = field(default_factory=TurnOutcome)
    turn_id: str = field(default_factory=new_turn_id)
    client: str = ""  # who asked, for quotas
    request_id: str = ""  # for the turn's log line
    lost: bool = False  # declared lost elsewhere: its reply is stored by whoever did
    _released: bool = False

    async def events(self) -> AsyncGenerator[Event, None]:
        """Stream the turn. The last event is `Done` or `Failed`; the lease is always released.

        Whatever happens (done, failure, stop, a bug), the reply so far is stored with its
        status, and a tool exchange is stored whole or not at all.
        """
        started_at = time.monotonic()
        progress = _Progress()
        try:
            yield Started(
                session=self.session_id,
                model=self.model.name,
                simulated=is_simulated(self.model),
                turn=self.turn_id,
            )
            steps = 0
            while True:
                sent = progress.uncounted = self._fit()
                # At the step limit, tool calls are not announced: none of them would run.
                last_step = steps >= self.limits.max_tool_steps
                completion: Completion | None = None
                step = self._model_step(sent, progress.reply, last_step, started_at)
                try:
                    # aclosing: a turn stopped mid-step closes the upstream request now.
                    async with contextlib.aclosing(step):
                        async for event in step:
                            if isinstance(event, Completion):
                                completion = event
                            else:
                                yield event
                except ContextTooLong as exc:
                    self._shrink_history(exc, sent, progress)  # or raise: no second try
                    continue
                assert completion is not None, "ChatModel.stream ends with a Completion"
                usage = completion.usage or self._estimate(sent, progress.reply, completion)
                self.outcome.usage += usage
                progress.uncounted = ()
                if not completion.tool_calls:
                    await self._end(progress, "complete")
                    yield Done(finish_reason=completion.finish_reason, usage=self.outcome.usage)
                    return
                if len(completion.tool_calls) > self.limits.max_tool_calls_per_step:
                    raise TooManyToolCalls(self.limits.max_tool_calls_per_step)
                if last_step:
                    self.outcome.error = "tool step limit reached"
                    await self._end(progress, progress.reply.cut_short(), quiet=True)
                    yield Failed(
                        f"tool step limit reached ({self.limits.max_tool_steps} steps); "
                        "ask a simpler question or raise MAX_TOOL_STEPS"
                    )
                    return
                steps += 1
                tool_events = self._use_tools(completion, progress.reply)
                async with contextlib.aclosing(tool_events):
                    async for event in tool_events:
                        yield event
                progress.reply = _Reply()
        except ChatError as exc:
            self.outcome.error = str(exc)
            reply = progress.reply
            status = "failed" if isinstance(exc, ReplyTooLong) else reply.cut_short()
            await self._end(progress, status, quiet=True)
            yield Failed(_failure_message(exc))
        finally:
            if progress.status is None:
                # Stopped, cancelled, or a bug: keep what was relayed, unless a reader declared
                # this turn lost and stored it from the turn log already.
                with anyio.CancelScope(shield=True):
                    status = progress.reply.cut_short()
                    await self._end(progress, status, quiet=True, store=not self.lost)

    async def _model_step(
        self, sent: Sequence[Message], reply: _Reply, last_step: bool, started_at: float
    ) -> AsyncGenerator[Event | Completion, None]:
        """One model step: its events as they stream (kept in `reply`), then its Completion."""
        outcome = self.outcome
        # aclosing: if this turn stops early, the upstream request closes now, not whenever the
        # garbage collector finalises the generator.
        async with contextlib.aclosing(
            self.model.stream(sent, tools=self.tools.specs, deadline=self.deadline)
        ) as model_events:
            async for event in model_events:
                if isinstance(event, Token):
                    if outcome.first_token_seconds is None:
                        outcome.first_token_seconds = time.monotonic() - started_at
                    reply.add(event.text)
                    outcome.chunks_out += 1
                    yield event
                elif isinstance(event, Reasoning):
                    reply.think(event.text)
                    yield event
                elif isinstance(event, ToolCallStarted):
                    reply.calls += 1
                    if reply.calls > self.limits.max_tool_calls_per_step:
                        raise TooManyToolCalls(self.limits.max_tool_calls_per_step)
                    if not last_step:
                        yield event
                else:
                    yield event
                if reply.size > MAX_MESSAGE_BYTES:
                    raise ReplyTooLong(MAX_MESSAGE_BYTES)

    def _shrink_history(
        self, refusal: ContextTooLong, sent: Sequence[Message], progress: _Progress
    ) -> None:
        """A context-length refusal before anything streamed: once, send less history, fit to
        the window the provider stated, else half of it. Otherwise the refusal stands."""
        if progress.reply.started:
            raise refusal
        no_history = len(sent) == len(self.system) + len(self.current)
        if no_history and len(self.current) == 1:
            # No history was sent: the message itself is over the window.
            raise ContextTooLong(_MESSAGE_TOO_LONG) from None
        if progress.shrunk or not self.past:
            raise refusal
        progress.shrunk = True
        ours = self.limits.context_tokens
        if refusal.window is not None and (ours is None or refusal.window < ours):
            self.stated_window = refusal.window
        else:
            self.past = self.past[len(self.past) // 2 + len(self.past) % 2 :]

    async def _use_tools(
        self, completion: Completion, reply: _Reply
    ) -> AsyncGenerator[Event, None]:
        """Run the step's tool calls, relay each result, and store the exchange: the assistant's
        calls and every answer in one atomic append, so a replayed history never holds a tool
        call without its result."""
        call_message = Message(
            role="assistant",
            content=reply.text,
            created_at=self.wall_clock(),
            tool_calls=completion.tool_calls,
            reasoning=reply.reasoning,
        )
        timeout = min(self.limits.tool_timeout_seconds, max(self.deadline - time.monotonic(), 0.0))
        results = await self.tools.run_all(completion.tool_calls, timeout=timeout)
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
        await self._append(exchange)
        self.current.extend(exchange)

    async def _end(
        self, progress: _Progress, status: Status, *, quiet: bool = False, store: bool = True
    ) -> None:
        """The one way a turn ends: store the reply with `status` (raising only when not
        `quiet`), count a step cut short, then free the session."""
        if store:
            await self._store_reply(progress.reply, status, quiet=quiet)
        self._count_unfinished(progress.uncounted, progress.reply)
        progress.status = status
        await self._release(status)

    async def abandon(self) -> None:
        """The turn will never run (its log could not be opened): store it `failed`, free the
        session."""
        self.outcome.error = "not started"
        with anyio.CancelScope(shield=True):
            await self._store_reply(_Reply(), "failed", quiet=True)
            await self._release("failed")

    @property
    def messages(self) -> list[Message]:
        """Everything this turn could send: the system prompt, replayable history, this turn."""
        return [*self.system, *(m for turn in self.past for m in turn), *self.current]

    def _fit(self) -> list[Message]:
        """What the model receives now: the newest history that fits the context window.

        When this turn alone (system prompt, prompt, its tool exchanges and the room kept for
        the reply) is over the window by this server's count, it goes alone: the count may be
        an estimate, above the provider's, and the provider's refusal says it best.
        """
        window = self.stated_window or self.limits.context_tokens
        if window is None:
            return self.messages
        count = self.count_tokens
        fixed = sum(message_tokens(m, count) for m in (*self.system, *self.current))
        budget = window - self.limits.reply_tokens - self.tools.spec_tokens(count) - fixed
        if budget <= 0:
            return [*self.system, *self.current]
        return [*self.system, *fit(self.past, budget, count), *self.current]

    def _count_unfinished(self, sent: Sequence[Message], reply: _Reply) -> None:
        """A step cut short after it started generating: its tokens count against the quotas
        too (estimated), or stopping just before the end would make every reply free."""
        if sent and reply.started:
            self.outcome.usage += self._estimate(sent, reply, None)

    def _estimate(
        self, sent: Sequence[Message], reply: _Reply, completion: Completion | None
    ) -> Usage:
        """The provider reported no usage: count it here, marked `estimated`, so the quotas
        still see it."""
        count = self.count_tokens
        prompt = sum(message_tokens(m, count) for m in sent) + self.tools.spec_tokens(count)
        generated = count(reply.text) + count(reply.reasoning)
        if completion is not None:
            generated += sum(count(c.name) + count(c.arguments) for c in completion.tool_calls)
        return Usage(prompt, generated, estimated=True)

    async def _release(self, status: Status) -> None:
        """Record the outcome and free the session, before the last event goes out: a client
        that sends its next prompt on `done` must not find the session busy.

        Shielded from cancellation (a client leaving at the last token must not leave the lease
        held), and tried twice: a store that failed once often answers the next call.
        """
        self.outcome.status = status
        if self._released:
            return
        self._released = True  # once, whatever the outcome
        with anyio.CancelScope(shield=True):
            for attempt in range(2):
                try:
                    await self.sessions.unlock(self.session_id, owner=self.owner)
                except Exception as exc:
                    # If both tries fail, the lease runs out by itself; the stream must close.
                    logger.warning("could not release the session: %s", type(exc).__name__)
                    if attempt == 0:
                        await anyio.sleep(0.05)
                    continue
                return

    async def _append(self, messages: Sequence[Message]) -> None:
        self.next_seq = await self.sessions.append(
            self.session_id, messages, seq=self.next_seq, now=self.wall_clock()
        )

    async def _store_reply(self, reply: _Reply, status: Status, *, quiet: bool = False) -> None:
        """Store the assistant's text; an empty interrupted or failed reply still marks the turn.

        A reply over the store's item limit is stored cut to fit, as `failed`: never nothing.
        `quiet`: a failure is logged, not raised (the turn is already ending).
        """
        content, reasoning = reply.text, reply.reasoning
        if reply.size > MAX_MESSAGE_BYTES:
            reasoning = truncate_utf8(reasoning, MAX_MESSAGE_BYTES)
            room = MAX_MESSAGE_BYTES - len(reasoning.encode("utf-8"))
            content, status = truncate_utf8(content, room), "failed"
        message = Message(
            role="assistant",
            content=content,
            status=status,
            created_at=self.wall_clock(),
            reasoning=reasoning,
        )
        try:
            await self._append([message])
        except Exception as exc:
            if not quiet:
                raise
            logger.warning("could not store the reply: %s", type(exc).__name__)


class _Progress:
    """Where a turn stands: the current step's reply, what the step sent and is not counted
    yet, whether the history was shrunk once, and the status once the reply is stored."""

    __slots__ = ("reply", "shrunk", "status", "uncounted")

    def __init__(self) -> None:
        self.reply = _Reply()
        self.uncounted: Sequence[Message] = ()
        self.shrunk = False
        self.status: Status | None = None


class _Reply:
    """The assistant's text and reasoning of the current step, as relayed, and their size in
    UTF-8 bytes."""

    __slots__ = ("calls", "parts", "size", "thoughts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.thoughts: list[str] = []
        self.size = 0
        self.calls = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += _utf8_size(text)

    def think(self, text: str) -> None:
        self.thoughts.append(text)
        self.size += _utf8_size(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.thoughts)

    @property
    def started(self) -> bool:
        return bool(self.parts or self.thoughts or self.calls)

    def cut_short(self) -> Status:
        """A started reply (text or reasoning) is `interrupted`, what it had kept; one that never
        started `failed`."""
        return "interrupted" if self.parts or self.thoughts else "failed"


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "replace"))


def _failure_message(exc: ChatError) -> str:
    if isinstance(exc, StoreError):
        return "the conversation could not be saved; try again"
    return str(exc)
