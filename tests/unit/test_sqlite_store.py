"""What the SQLite store adds to the contract: a durable file, shared safely between processes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.errors import SessionBusy
from core.model.messages import Message
from core.sessions.sqlite import SQLiteSessionStore

SID = "a" * 22
NOW = 1_700_000_000.0


async def test_file_and_parent_dirs_are_created_and_survive_a_restart(tmp_path: Path) -> None:
    # GIVEN a path whose directories do not exist yet
    path = tmp_path / ".data" / "nested" / "sessions.db"
    first = SQLiteSessionStore(path)
    await first.create(SID, title="kept", now=NOW)
    await first.append(SID, [Message(role="user", content="remember me")], seq=0, now=NOW)
    await first.aclose()
    # WHEN another store opens the same file (a restarted server)
    second = SQLiteSessionStore(path)
    session = await second.load(SID, now=NOW + 1)
    await second.aclose()
    # THEN the conversation is there, and the file is in WAL mode
    assert [m.content for m in session.messages] == ["remember me"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_two_stores_on_one_file_share_the_turn_lease(tmp_path: Path) -> None:
    # GIVEN two stores on one file, as two uvicorn workers would have
    path = tmp_path / "sessions.db"
    one, two = SQLiteSessionStore(path), SQLiteSessionStore(path)
    await one.create(SID, title="t", now=NOW)
    # WHEN one takes the lease THEN the other is refused
    await one.lock(SID, owner="worker-1", now=NOW, lease_seconds=30)
    with pytest.raises(SessionBusy):
        await two.lock(SID, owner="worker-2", now=NOW + 1, lease_seconds=30)
    await one.unlock(SID, owner="worker-1")
    await two.lock(SID, owner="worker-2", now=NOW + 2, lease_seconds=30)
    await one.aclose()
    await two.aclose()


async def test_in_memory_databases_work_and_are_private() -> None:
    one, two = SQLiteSessionStore(":memory:"), SQLiteSessionStore(":memory:")
    await one.create(SID, title="t", now=NOW)
    assert (await one.load(SID, now=NOW)).title == "t"
    await two.create(SID, title="other", now=NOW)  # no clash: a separate database
    await one.aclose()
    await two.aclose()
