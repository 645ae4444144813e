"""The producer's turn log: batches, the lease heartbeat, a Stop set elsewhere, a lost turn."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from core.chat.turn import Turn, TurnLimits, TurnRequest, begin_turn
from core.events import Done, Failed, Token
from core.sessions.memory import MemorySessionStore
from core.tools.builtins import builtin_registry
from core.turns.codec import decode_event
from core.turns.live import LiveTurns, LogPolicy
from core.turns.log import Encoded, TurnRead
from core.turns.memory import MemoryTurnLog
from core.turns.readers import follow_log
from tests.fakes import FakeModel, Step

FAST = LogPolicy(flush_seconds=0.05, heartbeat_seconds=0.1, lease_seconds=1.0, poll_seconds=0.02)


class CountingLog(MemoryTurnLog):
    """The memory log, noting the size of every batch appended."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def append(
        self,
        session_id: str,
        turn_id: str,
        first: int,
        events: Sequence[Encoded],
        **kwargs: Any,
    ) -> bool:
        self.batches.append(len(events))
        return await super().append(session_id, turn_id, first, events, **kwargs)


async def new_turn(model: FakeModel, store: MemorySessionStore) -> Turn:
    return await begin_turn(
        TurnRequest(prompt="hi"),
        model=model,
        sessions=store,
        tools=builtin_registry([]),
        limits=TurnLimits(),
    )


async def read_all(log: MemoryTurnLog, turn: Turn) -> TurnRead:
    read = await log.read(turn.session_id, turn.turn_id, after=0, now=time.time())
    assert read is not None
    return read


async def test_a_burst_is_flushed_in_batches_of_at_most_64_and_the_last_ends_the_turn() -> None:
    # GIVEN a reply of 200 tokens produced at once
    store, log = MemorySessionStore(), CountingLog()
    turns = LiveTurns(log=log, policy=FAST)
    turn = await new_turn(FakeModel([Step(tokens=["t"] * 200)]), store)
    live = await turns.start(turn)
    await live.wait_finished()
    # THEN every event is stored, in batches of at most 64, the last one finishing the turn
    read = await read_all(log, turn)
    assert [p for p, _ in read.events] == list(range(1, len(live.events) + 1))
    assert [decode_event(e) for _, e in read.events] == live.events
    assert max(log.batches) <= 64 and sum(log.batches) == len(live.events)
    assert read.record.state == "finished" and read.record.end == len(live.events)


async def test_an_idle_turn_renews_its_lease_and_sees_a_stop_set_in_the_log() -> None:
    # GIVEN a turn waiting on a slow model
    store, log = MemorySessionStore(), CountingLog()
    turns = LiveTurns(log=log, policy=FAST)
    turn = await new_turn(FakeModel([Step(tokens=["a", "b", "c"], delay=5.0)]), store)
    live = await turns.start(turn)
    await anyio.sleep(0.35)
    assert log.batches.count(0) >= 2  # heartbeats: no events, a renewed lease
    # WHEN another instance sets the stop flag
    assert await log.request_stop(turn.session_id, turn.turn_id, now=time.time())
    with anyio.fail_after(5):
        await live.wait_finished()
    # THEN the turn ends stopped, and the log says so
    assert live.events[-1] == Done(finish_reason="stopped", usage=turn.outcome.usage)
    read = await read_all(log, turn)
    assert read.record.state == "finished"
    assert decode_event(read.events[-1][1]) == live.events[-1]


async def test_a_reader_elsewhere_follows_the_log_to_the_end() -> None:
    store, log = MemorySessionStore(), MemoryTurnLog()
    turns = LiveTurns(log=log, policy=FAST)
    turn = await new_turn(FakeModel([Step(tokens=["x", "y", "z"], delay=0.05)]), store)
    live = await turns.start(turn)
    first = await log.read(turn.session_id, turn.turn_id, after=0, now=time.time())
    assert first is not None
    with anyio.fail_after(5):
        got = [e async for _, e in follow_log(log, store, first, after=0, policy=FAST)]
    await live.wait_finished()
    assert got == live.events
    assert [e.text for e in got if isinstance(e, Token)] == ["x", "y", "z"]


async def test_a_producer_that_stops_flushing_is_declared_lost_once() -> None:
    # GIVEN a turn opened in the log whose producer never writes again (it died)
    store, log = MemorySessionStore(), MemoryTurnLog()
    turn = await new_turn(FakeModel([]), store)
    await log.open(turn.session_id, turn.turn_id, now=time.time(), lease_seconds=0.1)
    await log.append(
        turn.session_id, turn.turn_id, 1, ["par", "tial"], now=time.time(), lease_seconds=0.1
    )
    first = await log.read(turn.session_id, turn.turn_id, after=0, now=time.time())
    assert first is not None
    policy = LogPolicy(lost_after_seconds=0.1, poll_seconds=0.02)
    # WHEN a reader follows it
    with anyio.fail_after(5):
        got = [e async for _, e in follow_log(log, store, first, after=0, policy=policy)]
    # THEN it gets what was flushed, then the error; the partial reply is stored, the
    # session released (the next turn may start)
    assert got == [Token("par"), Token("tial"), Failed("the reply was interrupted")]
    session = await store.load(turn.session_id, now=time.time())
    assert session.messages[-1].content == "partial"
    assert session.messages[-1].status == "interrupted"
    await store.lock(turn.session_id, owner="next", now=time.time(), lease_seconds=10)


@pytest.mark.parametrize("size", [100_000])
async def test_big_events_are_split_into_batches_under_the_item_limit(size: int) -> None:
    store, log = MemorySessionStore(), CountingLog()
    turns = LiveTurns(log=log, policy=FAST)
    turn = await new_turn(FakeModel([Step(tokens=["x" * size] * 3)]), store)
    live = await turns.start(turn)
    await live.wait_finished()
    read = await read_all(log, turn)
    assert [decode_event(e) for _, e in read.events] == live.events
    assert all(n <= 3 for n in log.batches) and len([n for n in log.batches if n]) >= 2


async def test_a_live_producer_declared_lost_stops_and_leaves_one_stored_reply() -> None:
    # GIVEN a turn whose lease is shorter than its heartbeat (a producer that looks dead)
    store, log = MemorySessionStore(), MemoryTurnLog()
    policy = LogPolicy(
        flush_seconds=0.02, heartbeat_seconds=0.3, lease_seconds=0.01, lost_after_seconds=0.01
    )
    turns = LiveTurns(log=log, policy=policy)
    turn = await new_turn(FakeModel([Step(tokens=["a", "b", "c", "d"], delay=0.1)]), store)
    live = await turns.start(turn)
    first = await log.read(turn.session_id, turn.turn_id, after=0, now=time.time())
    assert first is not None
    # WHEN a reader declares it lost and stores its reply from the log
    with anyio.fail_after(5):
        got = [e async for _, e in follow_log(log, store, first, after=0, policy=policy)]
        await live.wait_finished()
    # THEN the producer stopped (it learnt at its next write) and the session holds one reply:
    # the one recovered from the log, as the reader saw it
    assert got[-1] == Failed("the reply was interrupted")
    assert live.stop_requested
    session = await store.load(turn.session_id, now=time.time())
    assert [m.role for m in session.messages] == ["user", "assistant"]
    assert session.messages[-1].content == "".join(e.text for e in got if isinstance(e, Token))


class WatchedLog(CountingLog):
    """Notes when the event at `position` is stored."""

    def __init__(self, position: int) -> None:
        super().__init__()
        self.position = position
        self.reached = anyio.Event()

    async def append(
        self,
        session_id: str,
        turn_id: str,
        first: int,
        events: Sequence[Encoded],
        **kwargs: Any,
    ) -> bool:
        stop = await super().append(session_id, turn_id, first, events, **kwargs)
        if first + len(events) - 1 >= self.position:
            self.reached.set()
        return stop


async def test_a_slow_reply_is_flushed_within_flush_seconds_not_held_for_a_full_batch() -> None:
    # GIVEN tokens 0.3 s apart and a 0.05 s flush interval
    store, log = MemorySessionStore(), WatchedLog(position=2)
    turns = LiveTurns(log=log, policy=FAST)
    turn = await new_turn(FakeModel([Step(tokens=["a", "b", "c"], delay=0.3)]), store)
    live = await turns.start(turn)
    # WHEN the first token (event 2, after `started`) is out
    with anyio.fail_after(5):
        await log.reached.wait()
    # THEN it reached the log before the next one was produced
    assert sum(isinstance(e, Token) for e in live.events) == 1
    await live.wait_finished()
    read = await read_all(log, turn)
    assert [decode_event(e) for _, e in read.events] == live.events


async def test_many_turns_of_one_process_are_all_written_whole() -> None:
    # GIVEN 50 turns at once, their tokens interleaved, under one LiveTurns (one flusher)
    store, log = MemorySessionStore(), CountingLog()
    turns = LiveTurns(log=log, policy=FAST)
    tokens = [str(i) for i in range(40)]
    started = [
        await turns.start(await new_turn(FakeModel([Step(tokens=tokens, delay=0.005)]), store))
        for _ in range(50)
    ]
    with anyio.fail_after(10):
        for live in started:
            await live.wait_finished()
    # THEN each turn's log holds exactly its events, in order, and says it finished
    for live in started:
        read = await read_all(log, live.turn)
        assert [p for p, _ in read.events] == list(range(1, len(live.events) + 1))
        assert [decode_event(e) for _, e in read.events] == live.events
        assert read.record.state == "finished" and read.record.end == len(live.events)
    assert turns.count == 0
