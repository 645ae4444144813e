"""Turns run in a task of their own; any number of readers follow them at their own pace.

A turn is not a property of one HTTP response (DESIGN §2): a client that stops reading, or
leaves, never slows, blocks or cancels it. The turn runs to its end, bounded by its limits and
its deadline, and stores its reply; a Stop is an explicit request (`LiveTurns.stop`).

With a turn log, each turn's events are written in batches (within `flush_seconds` of the
oldest waiting one, or as soon as `flush_events` wait, whichever first; a heartbeat when idle)
off the hot path: in-process readers follow memory, readers elsewhere poll the log
(`core.turns.readers`). Each write renews the turn's lease and brings back the stop flag another
instance may have set. One timer per process (`_Flusher`) says which turn is due; a turn has
a task only while a write of its own is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
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


class _Flusher:
    """One timer for every turn of the process: it starts each turn's write when it falls due.

    No task waits per turn and no timer is armed per batch: a turn due is an entry in a heap
    (`(when, seq, turn)`; an entry whose `seq` is no longer the turn's is stale and skipped),
    and the one timer is armed for the earliest. Writes due within `slack` seconds of each
    other start together, a little early (never late), so the timer fires at most about
    `1 / slack` times a second however many turns run.
    """

    slack = 0.01

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due: list[tuple[float, int, LiveTurn]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def schedule(self, live: LiveTurn, when: float) -> None:
        """Start `live`'s write at `when` (loop time), instead of when it was due before."""
        self._seq += 1
        live._due_seq = self._seq
        heapq.heappush(self._due, (when, self._seq, live))
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        due = self._due
        until = self.loop.time() + self.slack
        while due and due[0][0] <= until:
            _, seq, live = heapq.heappop(due)
            if live._due_seq == seq:
                live._start_write()
        if due:
            self._timer_at = due[0][0]
            self._timer = self.loop.call_at(self._timer_at, self._fire)


class LiveTurn:
    """One running turn: the events produced so far, and a wake-up for readers."""

    def __init__(
        self,
        turn: Turn,
        log: TurnLog | None = None,
        policy: LogPolicy | None = None,
        flusher: _Flusher | None = None,
    ) -> None:
        self.turn = turn
        # Plain attributes, not properties: every event's id is made of them.
        self.session_id = turn.session_id
        self.turn_id = turn.turn_id
        self.events: list[Event] = []
        self.finished = False
        self.stop_requested = False
        self.flushed = 0  # events stored in the log
        self._log = log
        self._policy = policy or LogPolicy()
        # One future per waiting reader: set directly by `_wake`, no shared future to shield.
        self._waiters: list[asyncio.Future[None]] = []
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None
        # The turn log, written by `_write` tasks that `_flusher` (or a full batch) starts.
        if log is not None and flusher is None:
            flusher = _Flusher(asyncio.get_running_loop())
        self._flusher = flusher if log is not None else None
        self._due_seq = 0  # the flusher's entry for this turn that counts
        self._batch_due: float | None = None  # loop time the oldest unwritten event is due
        self._writing: asyncio.Task[None] | None = None
        self._logged: asyncio.Future[None] | None = None  # done: the log takes no more writes
        if self._flusher is not None:
            self._logged = self._flusher.loop.create_future()
            self._flusher.schedule(self, self._flusher.loop.time() + self._policy.heartbeat_seconds)

    def _publish(self, event: Event) -> None:
        self.events.append(event)
        if self._waiters:
            self._wake()
        flusher = self._flusher
        if flusher is None:
            return
        if self._batch_due is None:
            self._batch_due = flusher.loop.time() + self._policy.flush_seconds
            if self._writing is None:
                flusher.schedule(self, self._batch_due)
        if self._writing is None and (
            isinstance(event, TERMINAL_EVENTS)
            or len(self.events) - self.flushed >= self._policy.flush_events
        ):
            self._start_write()
        # A write in flight looks at what waits when it is done.

    def _start_write(self) -> None:
        if self._writing is not None or self._flusher is None:
            return
        self._due_seq = 0
        self._writing = self._flusher.loop.create_task(self._write())

    async def _write(self) -> None:
        """Write the waiting events in batches while a full batch (or the end) waits, then
        arrange the next write: when the oldest left is due, or a heartbeat.

        Never holds the producer: it only reads `events`. A failed write is retried (the batch
        grows); a turn declared lost elsewhere is stopped here.
        """
        log, policy, flusher = self._log, self._policy, self._flusher
        assert log is not None and flusher is not None
        failures = 0
        try:
            while True:
                first = self.flushed + 1
                batch = self._next_batch()
                left = len(self.events) - self.flushed - len(batch)
                # Events published from now on are due `flush_seconds` after the first of them;
                # any a batch left behind are due already.
                self._batch_due = flusher.loop.time() if left else None
                final = self._ended() and not left
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
                    self._close_log()
                    return
                except Exception as exc:
                    failures += 1
                    logger.warning("could not write the turn log: %s", type(exc).__name__)
                    if final and failures >= policy.final_flush_tries:
                        self._close_log()
                        return
                    await anyio.sleep(min(0.1 * failures, policy.heartbeat_seconds))
                    continue
                failures = 0
                self.flushed += len(batch)
                if final:
                    self._close_log()
                    return
                if stop:
                    self.stop()
                waiting = len(self.events) - self.flushed
                if not (self._ended() or waiting >= policy.flush_events):
                    break
        except BaseException:
            self._close_log()  # a bug or a cancelled task: nobody waits on it for ever
            raise
        finally:
            self._writing = None
        if waiting:
            due = self._batch_due
            flusher.schedule(self, flusher.loop.time() if due is None else due)
        else:
            flusher.schedule(self, flusher.loop.time() + policy.heartbeat_seconds)

    def _close_log(self) -> None:
        self._flusher = None
        self._due_seq = 0
        if self._logged is not None and not self._logged.done():
            self._logged.set_result(None)

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
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """Every event after the first `after`, as `(position, event)` from 1; the last is terminal.

        Each waiting reader has a future of its own, so one cancelled while waiting cancels
        only itself; a reader that stops iterating never holds the producer.
        """
        position = after
        events = self.events
        while True:
            while position < len(events):
                position += 1
                yield position, events[position - 1]
            if self.finished:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

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
        try:
            await self._run_turn(on_finish)
        finally:
            if self._logged is not None:
                with anyio.CancelScope(shield=True):
                    # The last batch is stored before the turn counts as finished (on Lambda,
                    # before the invocation's response ends and the instance is frozen).
                    self._start_write()
                    await self._logged

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
        self._flusher: _Flusher | None = None

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
        live = LiveTurn(turn, self._log, self.policy, self._flusher_here())
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

    def _flusher_here(self) -> _Flusher | None:
        """The flusher of the running loop (a test may run one LiveTurns on several)."""
        if self._log is None:
            return None
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.loop is not loop:
            self._flusher = _Flusher(loop)
        return self._flusher

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
