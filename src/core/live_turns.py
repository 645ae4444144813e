"""Turns run in a task of their own; any number of readers follow them at their own pace.

A turn is not a property of one HTTP response (DESIGN §2): a client that stops reading, or
leaves, never slows, blocks or cancels it. The turn runs to its end, bounded by its limits and
its deadline, and stores its reply; a Stop is an explicit request (`LiveTurns.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from core.chat import Turn
from core.events import Done, Event, Failed

logger = logging.getLogger("sse_chat_agent")

TERMINAL_EVENTS = (Done, Failed)
INTERRUPTED = "the reply was interrupted"

# Called once per turn, before its last event is published: the turn's log line and token spend
# are settled before a client that reacts to `done` can send its next prompt.
OnFinish = Callable[[Turn, float], Awaitable[None]]


class LiveTurn:
    """One running turn: the events produced so far, and a wake-up for readers."""

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.events: list[Event] = []
        self.finished = False
        self.stop_requested = False
        self._waiter: asyncio.Future[None] | None = None
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return self.turn.session_id

    def _publish(self, event: Event) -> None:
        self.events.append(event)
        self._wake()

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
                self.events.append(Failed(INTERRUPTED))
            self.finished = True
            self._wake()

    def _ended(self) -> bool:
        return bool(self.events) and isinstance(self.events[-1], TERMINAL_EVENTS)


class LiveTurns:
    """The turns this process runs, by session; the one place that starts and stops them."""

    def __init__(self, *, on_finish: OnFinish | None = None) -> None:
        self._on_finish = on_finish
        self._running: dict[str, LiveTurn] = {}

    def start(self, turn: Turn) -> LiveTurn:
        live = LiveTurn(turn)
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
