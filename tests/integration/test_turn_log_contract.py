"""The TurnLog contract, run against every adapter: memory, SQLite, DynamoDB (moto server).

Time is injected (`now=`), never slept: leases and TTLs are tested at exact instants.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import pytest

from core.aws.dynamodb import DynamoDBTable
from core.events import (
    Done,
    Failed,
    Reasoning,
    Started,
    Token,
    ToolCallStarted,
    ToolResult,
    Usage,
)
from core.sessions.ids import new_turn_id
from core.turns.codec import decode_event, encode_event
from core.turns.dynamodb import DynamoDBTurnLog
from core.turns.log import TurnLog, TurnLost, visible
from core.turns.memory import MemoryTurnLog
from core.turns.sqlite import SQLiteTurnLog
from tests.dynamodb_table import TEMPLATE, create_table_from_template
from tests.store_fixtures import moto_endpoint, use_fake_aws

TTL = 100
LEASE = 3.0
T0 = 1_700_000_000.0
S = "session-a"


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def log(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TurnLog]:
    built: TurnLog
    if request.param == "memory":
        built = MemoryTurnLog(ttl_seconds=TTL)
    elif request.param == "sqlite":
        built = SQLiteTurnLog(tmp_path / "data" / "sessions.db", ttl_seconds=TTL)
    else:
        if not TEMPLATE.exists():
            pytest.skip(f"NOT TESTED: {TEMPLATE} is missing")
        use_fake_aws(monkeypatch, moto_endpoint())
        table = f"sessions-{uuid.uuid4().hex}"
        create_table_from_template(boto3.client("dynamodb"), table)
        built = DynamoDBTurnLog(DynamoDBTable(table), ttl_seconds=TTL)
    yield built
    await built.aclose()


def tokens(*texts: str) -> list[object]:
    return [encode_event(Token(t)) for t in texts]


async def test_events_are_read_back_after_any_position_in_order(log: TurnLog) -> None:
    # GIVEN a turn with three batches
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 1, tokens("a", "b"), now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 3, tokens("c"), now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 4, tokens("d", "e", "f"), now=T0, lease_seconds=LEASE)
    # WHEN read after every position THEN exactly the later events come back, in order
    for after in range(7):
        read = await log.read(S, turn, after=after, now=T0)
        assert read is not None
        assert [p for p, _ in read.events] == list(range(after + 1, 7))
        assert "".join(str(e) for _, e in read.events) == "abcdef"[after:]
        assert read.record.running and read.record.end is None


async def test_a_heartbeat_renews_the_lease_and_reports_a_stop(log: TurnLog) -> None:
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    assert await log.append(S, turn, 1, [], now=T0 + 1, lease_seconds=LEASE) is False
    read = await log.read(S, turn, after=0, now=T0 + 1)
    assert read is not None and read.record.lease_until == T0 + 1 + LEASE and read.events == []
    assert await log.request_stop(S, turn, now=T0 + 1) is True
    assert await log.append(S, turn, 1, tokens("x"), now=T0 + 2, lease_seconds=LEASE) is True


async def test_a_final_batch_ends_the_turn(log: TurnLog) -> None:
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    done = encode_event(Done("stop", Usage(3, 4)))
    await log.append(S, turn, 1, [*tokens("a"), done], now=T0, lease_seconds=LEASE, final=True)
    read = await log.read(S, turn, after=1, now=T0)
    assert read is not None
    assert read.record.state == "finished" and read.record.end == 2
    assert [decode_event(e) for _, e in read.events] == [Done("stop", Usage(3, 4))]
    # A finished turn cannot be stopped, declared lost, or written to.
    assert await log.request_stop(S, turn, now=T0) is False
    assert await log.declare_lost(S, turn, now=T0 + 60, end=2) is False
    with pytest.raises(TurnLost):
        await log.append(S, turn, 3, tokens("late"), now=T0, lease_seconds=LEASE)


async def test_only_a_turn_past_its_lease_is_declared_lost_once(log: TurnLog) -> None:
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 1, tokens("a", "b"), now=T0, lease_seconds=LEASE)
    assert await log.declare_lost(S, turn, now=T0 + LEASE - 1, end=2) is False
    results = await asyncio.gather(
        *(log.declare_lost(S, turn, now=T0 + LEASE + 1, end=2) for _ in range(4))
    )
    assert sorted(results) == [False, False, False, True]
    # The producer, late, learns it was lost; what it wrote past `end` does not count.
    with pytest.raises(TurnLost):
        await log.append(S, turn, 3, tokens("c"), now=T0 + LEASE + 2, lease_seconds=LEASE)
    read = await log.read(S, turn, after=0, now=T0 + LEASE + 2)
    assert read is not None and read.record.state == "lost"
    assert [p for p, _ in visible(read).events] == [1, 2]


async def test_latest_is_the_newest_turn_of_the_session(log: TurnLog) -> None:
    assert await log.latest(S, now=T0) is None
    first, second = new_turn_id(T0), new_turn_id(T0 + 1)
    await log.open(S, first, now=T0, lease_seconds=LEASE)
    await log.append(S, first, 1, tokens("a"), now=T0, lease_seconds=LEASE, final=True)
    await log.open(S, second, now=T0 + 1, lease_seconds=LEASE)
    await log.append(S, second, 1, tokens("b"), now=T0 + 1, lease_seconds=LEASE)
    await log.open("other-session", new_turn_id(T0 + 2), now=T0 + 2, lease_seconds=LEASE)
    latest = await log.latest(S, now=T0 + 1)
    assert latest is not None and latest.turn_id == second and latest.running


async def test_expired_turns_are_invisible(log: TurnLog) -> None:
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 1, tokens("a"), now=T0, lease_seconds=LEASE, final=True)
    assert await log.read(S, turn, after=0, now=T0 + TTL - 1) is not None
    assert await log.read(S, turn, after=0, now=T0 + TTL) is None
    assert await log.latest(S, now=T0 + TTL) is None
    assert await log.read(S, "unknown", after=0, now=T0) is None


async def test_every_event_kind_round_trips(log: TurnLog) -> None:
    events = [
        Started(session=S, model="m", simulated=True, turn="t1"),
        Reasoning("hmm"),
        Token("héllo \ud800 👋"),
        ToolCallStarted(id="c1", name="calculator"),
        ToolResult(id="c1", name="calculator", ok=True, output="4"),
        Failed("boom"),
        Done("stopped", Usage(1, 2, 3, True)),
    ]
    turn = new_turn_id(T0)
    await log.open(S, turn, now=T0, lease_seconds=LEASE)
    await log.append(S, turn, 1, [encode_event(e) for e in events], now=T0, lease_seconds=LEASE)
    read = await log.read(S, turn, after=0, now=T0)
    assert read is not None
    assert [decode_event(e) for _, e in read.events] == events


async def test_an_idempotency_claim_has_one_holder_until_it_expires(log: TurnLog) -> None:
    assert await log.claim("k1", "first", now=T0, ttl_seconds=600) is None
    assert await log.claim("k1", "second", now=T0 + 599, ttl_seconds=600) == "first"
    assert await log.claim("k2", "other", now=T0, ttl_seconds=600) is None
    assert await log.claim("k1", "third", now=T0 + 601, ttl_seconds=600) is None
    await log.release("k1", "not-mine")
    assert await log.claim("k1", "fourth", now=T0 + 602, ttl_seconds=600) == "third"
    await log.release("k1", "third")
    assert await log.claim("k1", "fifth", now=T0 + 602, ttl_seconds=600) is None
