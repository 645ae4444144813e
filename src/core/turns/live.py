"""Turns run in a task of their own; any number of readers follow them at their own pace.

A turn is not a property of one HTTP response (DESIGN §2): a client that stops reading, or
leaves, never slows, blocks or cancels it. The turn runs to its end, bounded by its limits and
its deadline, and stores its reply; a Stop is an explicit request (`LiveTurns.stop`).

With a turn log, one flusher task per turn writes its events in batches (every `flush_seconds`
or `flush_events`, whichever first; a heartbeat when idle) off the hot path: in-process readers
follow memory, readers elsewhere poll the log (`core.turns.readers`). Each flush renews the
turn's lease and brings back the stop flag another instance may have set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from core.chat.turn import Turn
from core.events import Done, Event, Failed
from core.turns.codec import dump_events, encode_event
from core.turns.log import TurnLog, TurnLost

logger = logging.getLogger("sse_chat_agent")

TERMINAL_EVENTS = (Done, Failed)
INTERRUPTED = "the reply was interrupted"

# Called once per turn, before its last event is published: the turn's log line and token spend
# are settled before a client that reacts to `done` can send its next prompt.
OnFinish = Callable[[Turn, float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """How a turn is written to its log, and when a silent producer counts as lost."""

    flush_seconds: float = 0.25
    flush_events: int = 64
    batch_bytes: int = 256 * 1024  # a batch is one item: well under DynamoDB's 400 KB
    heartbeat_seconds: float = 1.0  # a Stop set elsewhere is seen within this (+ one write)
    lease_seconds: float = 3.0  # renewed by every flush
    lost_after_seconds: float = 2.0  # past the lease: readers declare the producer lost
    poll_seconds: float = 0.25  # readers elsewhere: at most 4 reads a second
    final_flush_tries: int = 5


class LiveTurn:
    """One running turn: the events produced so far, and a wake-up for readers."""

    def __init__(
        self, turn: Turn, log: TurnLog | None = None, policy: LogPolicy | None = None
    ) -> None:
        self.turn = turn
        self.events: list[Event] = []
        self.finished = False
        self.stop_requested = False
        self.flushed = 0  # events stored in the log
        self._log = log
        self._policy = policy or LogPolicy()
        self._waiter: asyncio.Future[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending = asyncio.Event()  # an event is waiting to be flushed
        self._full = asyncio.Event()  # a batch is full, or the turn ended: flush now

    @property
    def turn_id(self) -> str:
        return self.turn.turn_id

    @property
    def session_id(self) -> str:
        return self.turn.session_id

    def _publish(self, event: Event) -> None:
        self.events.append(event)
        self._wake()
        self._pending.set()
        if isinstance(event, TERMINAL_EVENTS) or (
            len(self.events) - self.flushed >= self._policy.flush_events
        ):
            self._full.set()

    async def _flush_loop(self) -> None:
        """Write the events to the log in batches until the terminal one is stored.

        Never holds the producer: it only reads `events`. A failed write is retried at the next
        round (the batch grows); a turn declared lost elsewhere is stopped here.
        """
        log, policy = self._log, self._policy
        assert log is not None
        failures = 0
        while True:
            # asyncio.timeout, not anyio's cancel scopes: this runs for every batch of every
            # turn, and a scope costs several times more.
            if len(self.events) == self.flushed and not self._ended():
                await _wait(self._pending, policy.heartbeat_seconds)
            waiting = len(self.events) - self.flushed
            if not self._ended() and 0 < waiting < policy.flush_events:
                await _wait(self._full, policy.flush_seconds)
            self._pending.clear()
            self._full.clear()
            first = self.flushed + 1
            batch = self._next_batch()
            final = self._ended() and self.flushed + len(batch) == len(self.events)
            try:
                stop = await log.append(
                    self.turn.session_id,
                    self.turn_id,
                    first,
                    batch,
                    now=time.time(),
                    lease_seconds=policy.lease_seconds,
                    final=final,
                )
            except TurnLost:
                logger.warning("the turn was declared lost; stopping it")
                self.turn.lost = True
                self.stop()
                return
            except Exception as exc:
                failures += 1
                logger.warning("could not write the turn log: %s", type(exc).__name__)
                if final and failures >= policy.final_flush_tries:
                    return
                await anyio.sleep(min(0.1 * failures, policy.heartbeat_seconds))
                continue
            failures = 0
            self.flushed += len(batch)
            if final:
                return
            if stop:
                self.stop()
            if len(self.events) - self.flushed >= policy.flush_events:
                self._full.set()  # a batch was cut short by its size: the rest goes now

    def _next_batch(self) -> list[Any]:
        """The encoded events waiting, up to `flush_events` of them and about `batch_bytes`
        (always at least one)."""
        batch: list[Any] = []
        size = 0
        for event in self.events[self.flushed : self.flushed + self._policy.flush_events]:
            encoded = encode_event(event)
            size += len(encoded) if isinstance(encoded, str) else _size(encoded)
            if batch and size > self._policy.batch_bytes:
                break
            batch.append(encoded)
        return batch

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """Every event after the first `after`, as `(position, event)` from 1; the last is terminal.

        Readers share one future per wake-up and never hold the producer: a reader that stops
        iterating only stops itself.
        """
        position = after
        while True:
            while position < len(self.events):
                position += 1
                yield position, self.events[position - 1]
            if self.finished:
                return
            if self._waiter is None:
                self._waiter = asyncio.get_running_loop().create_future()
            # shield: a reader cancelled while waiting must not cancel the shared future.
            await asyncio.shield(self._waiter)

    async def wait_finished(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    def stop(self) -> bool:
        """Ask the turn to stop now; False when it had already ended."""
        if self.finished or self.stop_requested:
            return not self.finished
        self.stop_requested = True
        if self._scope is not None:
            self._scope.cancel()
        return True

    async def _produce(self, on_finish: OnFinish | None) -> None:
        flusher: asyncio.Task[None] | None = None
        if self._log is not None:
            flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        try:
            await self._run_turn(on_finish)
        finally:
            if flusher is not None:
                with anyio.CancelScope(shield=True):
                    # The last batch is stored before the turn counts as finished (on Lambda,
                    # before the invocation's response ends and the instance is frozen).
                    self._full.set()
                    await flusher

    async def _run_turn(self, on_finish: OnFinish | None) -> None:
        started = time.monotonic()
        settled = False

        async def settle() -> None:
            nonlocal settled
            if settled or on_finish is None:
                settled = True
                return
            settled = True
            with anyio.CancelScope(shield=True):
                try:
                    await on_finish(self.turn, time.monotonic() - started)
                except Exception as exc:
                    logger.warning("could not settle the turn: %s", type(exc).__name__)

        try:
            with anyio.CancelScope() as self._scope:
                if self.stop_requested:
                    self._scope.cancel()
                async with contextlib.aclosing(self.turn.events()) as events:
                    async for event in events:
                        if isinstance(event, TERMINAL_EVENTS):
                            await settle()
                        self._publish(event)
            if self.stop_requested and not self._ended():
                # The turn stored the reply so far as `interrupted` on its way out.
                await settle()
                self._publish(Done(finish_reason="stopped", usage=self.turn.outcome.usage))
        except Exception as exc:
            # A bug, not a ChatError: the turn already stored its partial reply; readers still
            # get `{"error"}` last and a cleanly closed stream.
            logger.error("unexpected %s in a turn", type(exc).__name__)
            if not self._ended():
                self.turn.outcome.error = "internal error"
                await settle()
                self._publish(Failed("internal error"))
        finally:
            if not self._ended():
                # Cancelled (the server is shutting down): the reply so far is stored.
                await settle()
                self._publish(Failed(INTERRUPTED))
            self.finished = True
            self._wake()

    def _ended(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], TERMINAL_EVENTS)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _size(encoded: Any) -> int:
    return len(dump_events([encoded]).encode("utf-8"))


class LiveTurns:
    """The turns this process runs, by session; the one place that starts and stops them."""

    def __init__(
        self,
        *,
        on_finish: OnFinish | None = None,
        log: TurnLog | None = None,
        policy: LogPolicy | None = None,
    ) -> None:
        self._on_finish = on_finish
        self._log = log
        self.policy = policy or LogPolicy()
        self._running: dict[str, LiveTurn] = {}

    async def start(self, turn: Turn) -> LiveTurn:
        """Open the turn in the log (readers elsewhere can find it from now on) and run it."""
        if self._log is not None:
            try:
                await self._log.open(
                    turn.session_id,
                    turn.turn_id,
                    now=time.time(),
                    lease_seconds=self.policy.lease_seconds,
                )
            except BaseException:
                await turn.abandon()
                raise
        live = LiveTurn(turn, self._log, self.policy)
        self._running[turn.session_id] = live
        task = asyncio.get_running_loop().create_task(self._run(live))
        live._task = task
        return live

    async def _run(self, live: LiveTurn) -> None:
        try:
            await live._produce(self._on_finish)
        finally:
            if self._running.get(live.session_id) is live:
                del self._running[live.session_id]

    def running(self, session_id: str) -> LiveTurn | None:
        return self._running.get(session_id)

    def find(self, session_id: str, turn_id: str) -> LiveTurn | None:
        """The turn if this process runs it (still producing)."""
        live = self._running.get(session_id)
        return live if live is not None and live.turn_id == turn_id else None

    def stop(self, session_id: str) -> bool:
        """Stop the session's turn if this process runs it; False when none is running here."""
        live = self._running.get(session_id)
        return live is not None and live.stop()

    @property
    def count(self) -> int:
        return len(self._running)

    async def aclose(self, grace_seconds: float = 5.0) -> None:
        """Let running turns finish for `grace_seconds`, then cancel the rest (each stores its
        reply so far as `interrupted`)."""
        tasks = [live._task for live in self._running.values() if live._task is not None]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace_seconds)
