"""The SessionStore contract, run against every store: memory, SQLite, DynamoDB (moto server).

Time is injected (`now=`), never slept: TTL and lease expiry are tested at exact instants.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import boto3
import pytest

from core.errors import (
    InvalidRequest,
    MessageTooLarge,
    SessionBusy,
    SessionConflict,
    SessionNotFound,
)
from core.model.messages import Message, ToolCall
from core.sessions.dynamodb import DynamoDBSessionStore
from core.sessions.ids import new_session_id
from core.sessions.memory import MemorySessionStore
from core.sessions.port import Session, SessionStore
from core.sessions.rules import MAX_MESSAGE_BYTES
from core.sessions.sqlite import SQLiteSessionStore
from handlers.errors import status_of
from tests.dynamodb_table import TEMPLATE, create_table_from_template
from tests.store_fixtures import moto_endpoint, use_fake_aws

TTL = 100
T0 = 1_700_000_000.0  # whole seconds: expires_at is T0 + TTL exactly


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SessionStore]:
    built: SessionStore
    if request.param == "memory":
        built = MemorySessionStore(ttl_seconds=TTL)
    elif request.param == "sqlite":
        built = SQLiteSessionStore(tmp_path / "data" / "sessions.db", ttl_seconds=TTL)
    else:
        if not TEMPLATE.exists():
            pytest.skip(
                f"NOT TESTED: {TEMPLATE} is missing, and the DynamoDB table is built from its "
                "SessionsTable resource"
            )
        use_fake_aws(monkeypatch, moto_endpoint())
        table = f"sessions-{uuid.uuid4().hex}"
        create_table_from_template(boto3.client("dynamodb"), table)
        # No client injected: the store builds its own, found through AWS_ENDPOINT_URL_DYNAMODB.
        built = DynamoDBSessionStore(table, ttl_seconds=TTL)
    yield built
    await built.aclose()


@pytest.fixture
async def session_id(store: SessionStore) -> str:
    sid = new_session_id()
    await store.create(sid, title="First prompt", now=T0)
    return sid


def user(text: str, at: float = T0) -> Message:
    return Message(role="user", content=text, created_at=at)


def assistant(text: str, *calls: ToolCall, at: float = T0) -> Message:
    return Message(role="assistant", content=text, created_at=at, tool_calls=calls)


def tool(call: ToolCall, output: str) -> Message:
    return Message(role="tool", content=output, created_at=T0, tool_call_id=call.id, name=call.name)


def contents(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages]


CALC = ToolCall(id="call_1", name="calculator", arguments='{"expression": "6*7"}')
CLOCK = ToolCall(id="call_2", name="get_current_time", arguments='{"timezone": "UTC"}')


# --- create and load ---------------------------------------------------------------------------


async def test_created_session_loads_empty(store: SessionStore) -> None:
    # GIVEN a new session
    sid = new_session_id()
    await store.create(sid, title="Hello 👋", now=T0 + 0.25)
    # WHEN it is loaded
    session = await store.load(sid, now=T0 + 1)
    # THEN it has its title and times, no messages, and sequence 0 is next
    assert (session.id, session.title, session.messages, session.next_seq) == (
        sid,
        "Hello 👋",
        (),
        0,
    )
    assert session.created_at == session.updated_at == T0 + 0.25  # exact, not rounded


async def test_unknown_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        await store.load(new_session_id(), now=T0)
    with pytest.raises(SessionNotFound):
        await store.append(new_session_id(), [user("hi")], seq=0, now=T0)


async def test_create_refuses_a_live_id_but_replaces_an_expired_one(
    store: SessionStore, session_id: str
) -> None:
    with pytest.raises(SessionConflict):
        await store.create(session_id, title="again", now=T0 + 1)
    await store.create(session_id, title="reborn", now=T0 + TTL)
    session = await store.load(session_id, now=T0 + TTL)
    assert (session.title, session.messages) == ("reborn", ())


async def test_a_session_created_with_its_first_messages_holds_them_and_its_lease(
    store: SessionStore,
) -> None:
    # GIVEN a new session created leased to "a" and holding the first prompt (a new session's
    # first turn, in one write)
    sid = new_session_id()
    await store.create(
        sid, title="Hi", now=T0, owner="a", lease_seconds=30, messages=[user("hi"), user("again")]
    )
    # THEN it loads with them, counts them, appends after them, and is a's until released
    session = await store.load(sid, now=T0 + 1)
    assert [m.content for m in session.messages] == ["hi", "again"]
    assert session.next_seq == 2
    assert await store.append(sid, [assistant("hello")], seq=2, now=T0 + 1) == 3
    with pytest.raises(SessionBusy):
        await store.lock(sid, owner="b", now=T0 + 10, lease_seconds=30)


async def test_create_with_messages_under_a_live_id_changes_nothing(
    store: SessionStore, session_id: str
) -> None:
    with pytest.raises(SessionConflict):
        await store.create(session_id, title="again", now=T0 + 1, messages=[user("lost?")])
    session = await store.load(session_id, now=T0 + 1)
    assert (session.title, session.messages, session.next_seq) == ("First prompt", (), 0)


async def test_create_refuses_a_too_large_first_message_and_writes_nothing(
    store: SessionStore,
) -> None:
    sid = new_session_id()
    with pytest.raises(MessageTooLarge):
        await store.create(sid, title="big", now=T0, messages=[user("x" * (MAX_MESSAGE_BYTES + 1))])
    with pytest.raises(SessionNotFound):
        await store.load(sid, now=T0)


# --- append ------------------------------------------------------------------------------------


async def test_append_keeps_order_and_advances_next_seq(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN two appends, one of one message and one of two
    assert await store.append(session_id, [user("one")], seq=0, now=T0 + 1) == 1
    assert await store.append(session_id, [assistant("two"), user("three")], seq=1, now=T0 + 2) == 3
    # WHEN the session is loaded
    session = await store.load(session_id, now=T0 + 3)
    # THEN the messages come oldest first, and the session was touched by the last append
    assert contents(session.messages) == ["one", "two", "three"]
    assert [m.role for m in session.messages] == ["user", "assistant", "user"]
    assert session.next_seq == 3
    assert session.updated_at == T0 + 2
    assert session.created_at == T0


async def test_append_on_a_taken_sequence_conflicts_and_writes_nothing(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN messages at sequences 0 and 1
    await store.append(session_id, [user("mine"), assistant("reply")], seq=0, now=T0)
    # WHEN another writer appends three messages from sequence 1 (1 is taken, 2 and 3 are free)
    with pytest.raises(SessionConflict):
        await store.append(session_id, [user("a"), user("b"), user("c")], seq=1, now=T0 + 1)
    # THEN none of its messages is stored, not even the free ones
    session = await store.load(session_id, now=T0 + 2)
    assert contents(session.messages) == ["mine", "reply"]
    assert session.next_seq == 2
    # and the next free sequence still works
    assert await store.append(session_id, [user("next")], seq=2, now=T0 + 3) == 3


# --- the history window ------------------------------------------------------------------------


async def _conversation(store: SessionStore, session_id: str) -> None:
    """u0 a0 u1 a1(tool_calls) t1 t2 a1' u2 a2 at sequences 0..8."""
    await store.append(
        session_id,
        [
            user("u0"),
            assistant("a0"),
            user("u1"),
            assistant("", CALC, CLOCK),
            tool(CALC, "42"),
            tool(CLOCK, "12:00"),
            assistant("a1'"),
            user("u2"),
            assistant("a2"),
        ],
        seq=0,
        now=T0,
    )


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (None, ["u0", "a0", "u1", "", "42", "12:00", "a1'", "u2", "a2"]),
        (100, ["u0", "a0", "u1", "", "42", "12:00", "a1'", "u2", "a2"]),
        (6, ["", "42", "12:00", "a1'", "u2", "a2"]),  # the tool exchange fits whole
        (5, ["a1'", "u2", "a2"]),  # would start at t1: both tool results dropped
        (4, ["a1'", "u2", "a2"]),  # would start at t2: dropped
        (3, ["a1'", "u2", "a2"]),
        (1, ["a2"]),
        (0, []),
    ],
)
async def test_window_never_starts_with_orphan_tool_results(
    store: SessionStore, session_id: str, limit: int | None, expected: list[str]
) -> None:
    await _conversation(store, session_id)
    session = await store.load(session_id, now=T0 + 1, limit=limit)
    assert contents(session.messages) == expected
    assert session.next_seq == 9  # the window never changes where the next append goes


# --- TTL ---------------------------------------------------------------------------------------


async def test_session_expires_after_ttl_unless_an_append_refreshes_it(
    store: SessionStore,
) -> None:
    quiet, busy = new_session_id(), new_session_id()
    await store.create(quiet, title="quiet", now=T0)
    await store.create(busy, title="busy", now=T0)
    await store.append(busy, [user("still here")], seq=0, now=T0 + 50)
    # Just before the TTL the quiet session is live; at it, it is gone.
    assert (await store.load(quiet, now=T0 + TTL - 0.5)).title == "quiet"
    for operation in (
        store.load(quiet, now=T0 + TTL),
        store.append(quiet, [user("late")], seq=0, now=T0 + TTL),
        store.lock(quiet, owner="a", now=T0 + TTL, lease_seconds=10),
        store.delete(quiet, now=T0 + TTL),
    ):
        with pytest.raises(SessionNotFound):
            await operation
    # The append at T0 + 50 moved the busy session's expiry to T0 + 150.
    assert contents((await store.load(busy, now=T0 + TTL + 40)).messages) == ["still here"]
    with pytest.raises(SessionNotFound):
        await store.load(busy, now=T0 + TTL + 50)


async def test_expired_messages_are_hidden_but_keep_their_sequence(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN two messages appended at T0 (expiring at T0 + TTL) and two at T0 + 60
    await store.append(session_id, [user("old q"), assistant("old a")], seq=0, now=T0)
    await store.append(session_id, [user("new q"), assistant("new a")], seq=2, now=T0 + 60)
    # WHEN loaded after the first two expired (stores may still hold the items)
    session = await store.load(session_id, now=T0 + TTL + 10)
    # THEN only the live ones show, and the next append still goes after all four
    assert contents(session.messages) == ["new q", "new a"]
    assert session.next_seq == 4
    assert await store.append(session_id, [user("more")], seq=4, now=T0 + TTL + 10) == 5


async def test_expiry_never_leaves_orphan_tool_results(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN a tool exchange split over two appends: the call, then (later) its results
    await store.append(session_id, [user("time?"), assistant("", CLOCK)], seq=0, now=T0)
    await store.append(
        session_id, [tool(CLOCK, "12:00"), assistant("It is noon.")], seq=2, now=T0 + 60
    )
    # WHEN the first append has expired
    session = await store.load(session_id, now=T0 + TTL + 10)
    # THEN the tool result whose call expired is not shown either
    assert contents(session.messages) == ["It is noon."]


# --- the turn lease ----------------------------------------------------------------------------


async def test_lock_is_a_lease_held_by_one_owner(store: SessionStore, session_id: str) -> None:
    await store.lock(session_id, owner="a", now=T0, lease_seconds=30)
    with pytest.raises(SessionBusy):
        await store.lock(session_id, owner="b", now=T0 + 10, lease_seconds=30)
    with pytest.raises(SessionBusy):  # not re-entrant, even for its holder
        await store.lock(session_id, owner="a", now=T0 + 10, lease_seconds=30)
    # The lease lapses at exactly T0 + 30: a crashed holder blocks the session no longer.
    await store.lock(session_id, owner="b", now=T0 + 30, lease_seconds=30)
    await store.unlock(session_id, owner="a")  # not a's lease any more: ignored
    with pytest.raises(SessionBusy):
        await store.lock(session_id, owner="c", now=T0 + 31, lease_seconds=30)
    await store.unlock(session_id, owner="b")
    await store.lock(session_id, owner="c", now=T0 + 31, lease_seconds=30)


async def test_a_session_created_with_an_owner_is_leased_to_it(store: SessionStore) -> None:
    # GIVEN a new session created already leased to "a" (a new session's first turn)
    sid = new_session_id()
    await store.create(sid, title="First prompt", now=T0, owner="a", lease_seconds=30)
    # THEN it is empty, nobody else takes the lease until it lapses, and its owner releases it
    session = await store.load(sid, now=T0)
    assert (session.messages, session.next_seq) == ((), 0)
    with pytest.raises(SessionBusy):
        await store.lock(sid, owner="b", now=T0 + 10, lease_seconds=30)
    await store.lock(sid, owner="b", now=T0 + 30, lease_seconds=30)
    await store.unlock(sid, owner="b")
    await store.unlock(sid, owner="a")  # not a's lease any more: ignored
    await store.lock(sid, owner="c", now=T0 + 31, lease_seconds=30)


async def test_lock_on_unknown_session_is_not_found(store: SessionStore) -> None:
    with pytest.raises(SessionNotFound):
        await store.lock(new_session_id(), owner="a", now=T0, lease_seconds=30)
    await store.unlock(new_session_id(), owner="a")  # nothing to release: no error


# --- delete ------------------------------------------------------------------------------------


async def test_delete_forgets_the_session_and_all_its_messages(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN 60 messages (more than one DynamoDB batch of 25)
    for seq in range(0, 60, 20):
        await store.append(session_id, [user(f"m{seq + i}") for i in range(20)], seq=seq, now=T0)
    # WHEN the session is deleted
    await store.delete(session_id, now=T0 + 1)
    # THEN it is not found, and deleting again is not found either
    with pytest.raises(SessionNotFound):
        await store.load(session_id, now=T0 + 1)
    with pytest.raises(SessionNotFound):
        await store.delete(session_id, now=T0 + 1)
    # and no message survived: the same id created again starts at sequence 0
    await store.create(session_id, title="again", now=T0 + 2)
    session = await store.load(session_id, now=T0 + 2)
    assert (session.messages, session.next_seq) == ((), 0)


async def test_delete_of_unknown_or_expired_session_is_not_found(
    store: SessionStore, session_id: str
) -> None:
    with pytest.raises(SessionNotFound):
        await store.delete(new_session_id(), now=T0)
    with pytest.raises(SessionNotFound):
        await store.delete(session_id, now=T0 + TTL)


# --- what is stored, exactly -------------------------------------------------------------------


async def test_oversized_message_is_refused_and_nothing_written(
    store: SessionStore, session_id: str
) -> None:
    too_big = "x" * (MAX_MESSAGE_BYTES + 1)
    with pytest.raises(MessageTooLarge) as caught:
        await store.append(session_id, [user("fine"), assistant(too_big)], seq=0, now=T0)
    assert caught.value.size_bytes > caught.value.limit_bytes == MAX_MESSAGE_BYTES
    assert status_of(caught.value) == 413  # the HTTP edge's table
    assert (await store.load(session_id, now=T0)).next_seq == 0
    # Tool-call arguments count too.
    huge_call = ToolCall(id="c", name="calculator", arguments="1" * MAX_MESSAGE_BYTES)
    with pytest.raises(MessageTooLarge):
        await store.append(session_id, [assistant("", huge_call)], seq=0, now=T0)


async def test_message_of_exactly_the_limit_round_trips(
    store: SessionStore, session_id: str
) -> None:
    # Counted in UTF-8 bytes: "é" is two, so this is MAX_MESSAGE_BYTES bytes.
    at_limit = "é" * (MAX_MESSAGE_BYTES // 2)
    await store.append(session_id, [user(at_limit)], seq=0, now=T0)
    assert contents((await store.load(session_id, now=T0)).messages) == [at_limit]


async def test_text_that_is_not_unicode_is_refused(store: SessionStore, session_id: str) -> None:
    with pytest.raises(InvalidRequest):
        await store.append(session_id, [user("lone \ud800 surrogate")], seq=0, now=T0)


async def test_tool_exchange_round_trips_exactly(store: SessionStore, session_id: str) -> None:
    written = [
        user("What is 6*7, and the time?", at=T0 + 0.125),
        assistant("Let me check.", CALC, CLOCK, at=T0 + 1.5),
        tool(CALC, "42"),
        tool(CLOCK, '{"time": "12:00"}'),
        Message(role="assistant", content="42, at noon", status="interrupted", created_at=T0 + 2),
        Message(role="assistant", content="", status="failed", created_at=T0 + 3),
    ]
    await store.append(session_id, written, seq=0, now=T0 + 3)
    assert list((await store.load(session_id, now=T0 + 3)).messages) == written


async def test_reasoning_round_trips_beside_the_content(
    store: SessionStore, session_id: str
) -> None:
    written = [
        user("Think first"),
        Message(
            role="assistant",
            content="",
            created_at=T0 + 1,
            tool_calls=(CALC,),
            reasoning="I need the calculator. 🤔",
        ),
        tool(CALC, "42"),
        Message(
            role="assistant",
            content="It is 42",
            status="interrupted",
            created_at=T0 + 2,
            reasoning="The tool said 42.",
        ),
    ]
    await store.append(session_id, written, seq=0, now=T0 + 2)
    assert list((await store.load(session_id, now=T0 + 2)).messages) == written


async def test_reasoning_counts_against_the_message_size_limit(
    store: SessionStore, session_id: str
) -> None:
    half = "r" * (MAX_MESSAGE_BYTES // 2 + 1)
    big = Message(role="assistant", content=half, reasoning=half, created_at=T0)
    with pytest.raises(MessageTooLarge):
        await store.append(session_id, [big], seq=0, now=T0)


async def test_pages_hold_the_newest_messages_oldest_first_with_a_cursor(
    store: SessionStore, session_id: str
) -> None:
    await store.append(session_id, [user(f"m{i}") for i in range(7)], seq=0, now=T0)
    first = await store.page(session_id, now=T0, limit=3)
    assert contents(first.session.messages) == ["m4", "m5", "m6"]
    assert first.older is not None
    second = await store.page(session_id, now=T0, limit=3, before=first.older)
    assert contents(second.session.messages) == ["m1", "m2", "m3"]
    third = await store.page(session_id, now=T0, limit=3, before=second.older)
    assert contents(third.session.messages) == ["m0"] and third.older is None
    everything = await store.page(session_id, now=T0, limit=7)
    assert len(everything.session.messages) == 7 and everything.older is None
    with pytest.raises(SessionNotFound):
        await store.page(session_id, now=T0 + TTL + 1, limit=3)


async def test_unicode_content_is_byte_exact(store: SessionStore, session_id: str) -> None:
    texts = [
        "emoji 👩‍👩‍👧‍👦 🏳️‍🌈 and flags 🇫🇷",
        "combining: e\u0301 vs é; RTL: مرحبا; CJK: 漢字かな",
        "  leading/trailing spaces, tabs\t, CRLF\r\n, LF\n, nul \x00 and \u2028  ",
        'quotes " \' ` backslash \\ and JSON-ish {"a": [1]}',
    ]
    await store.append(session_id, [user(text) for text in texts], seq=0, now=T0)
    stored = contents((await store.load(session_id, now=T0)).messages)
    assert [s.encode("utf-8") for s in stored] == [t.encode("utf-8") for t in texts]


# --- concurrency -------------------------------------------------------------------------------


async def test_ten_racing_turns_each_complete_or_are_refused(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN ten turns on one session, each: lock -> load -> append user+assistant -> unlock
    async def turn(n: int) -> str:
        owner = f"turn-{n}"
        try:
            await store.lock(session_id, owner=owner, now=T0, lease_seconds=60)
        except SessionBusy:
            return "busy"
        try:
            session = await store.load(session_id, now=T0, limit=20)
            await asyncio.sleep(0)  # the model call would be here
            await store.append(
                session_id, [user(f"q{n}"), assistant(f"a{n}")], seq=session.next_seq, now=T0
            )
            return "stored"
        except SessionConflict:
            return "conflict"
        finally:
            await store.unlock(session_id, owner=owner)

    # WHEN they race
    outcomes = await asyncio.gather(*(turn(n) for n in range(10)))
    # THEN each either stored both its messages, adjacent and in order, or was refused cleanly
    assert set(outcomes) <= {"stored", "busy", "conflict"}
    stored = [n for n, outcome in enumerate(outcomes) if outcome == "stored"]
    assert stored, "at least one turn must get through"
    _assert_pairs(await store.load(session_id, now=T0), stored)


async def test_ten_racing_appends_without_the_lease_never_overwrite(
    store: SessionStore, session_id: str
) -> None:
    # GIVEN ten writers that skip the lease and append at the next_seq they loaded
    async def write(n: int) -> str:
        session = await store.load(session_id, now=T0)
        await asyncio.sleep(0)
        try:
            await store.append(
                session_id, [user(f"q{n}"), assistant(f"a{n}")], seq=session.next_seq, now=T0
            )
        except SessionConflict:
            return "conflict"
        return "stored"

    # WHEN they race
    outcomes = await asyncio.gather(*(write(n) for n in range(10)))
    # THEN the conditional append let no one overwrite another: losers got SessionConflict
    stored = [n for n, outcome in enumerate(outcomes) if outcome == "stored"]
    assert stored, "at least one writer must get through"
    _assert_pairs(await store.load(session_id, now=T0), stored)


def _assert_pairs(session: Session, stored: list[int]) -> None:
    """The session holds exactly the pairs of `stored` turns, each pair adjacent, in order."""
    texts = contents(session.messages)
    assert len(texts) == 2 * len(stored) == session.next_seq
    pairs = [(texts[i], texts[i + 1]) for i in range(0, len(texts), 2)]
    assert sorted(pairs) == sorted((f"q{n}", f"a{n}") for n in stored)
