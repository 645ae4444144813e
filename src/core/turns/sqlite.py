"""The SQLite TurnLog: beside the sessions, in the same file (its own tables and connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from core.errors import StoreError
from core.sessions.rules import expires_at
from core.sqlite_file import SQLiteFile
from core.turns.codec import dump_events, load_events
from core.turns.log import Encoded, TurnLost, TurnRead, TurnRecord, TurnState

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    state TEXT NOT NULL,
    lease_until REAL NOT NULL,
    stop INTEGER NOT NULL DEFAULT 0,
    end_pos INTEGER,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, turn_id)
);
CREATE TABLE IF NOT EXISTS turn_batches (
    session_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    last_pos INTEGER NOT NULL,
    first_pos INTEGER NOT NULL,
    events TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, turn_id, last_pos)
);
CREATE INDEX IF NOT EXISTS turns_expires_at ON turns (expires_at);
CREATE INDEX IF NOT EXISTS turn_batches_expires_at ON turn_batches (expires_at);
CREATE TABLE IF NOT EXISTS turn_claims (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""
_HEADER = "SELECT state, lease_until, stop, end_pos FROM turns"


class SQLiteTurnLog:
    """Each operation is one transaction in a worker thread, on one connection with a lock."""

    def __init__(self, path: str | Path, *, ttl_seconds: float = 3600) -> None:
        self._file = SQLiteFile(path, schema=_SCHEMA)
        self._ttl = ttl_seconds

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(operation, failure=lambda _: StoreError("turn log failed"))

    @staticmethod
    def _record(session_id: str, turn_id: str, row: tuple[Any, ...]) -> TurnRecord:
        state, lease_until, stop, end = row
        return TurnRecord(
            session_id, turn_id, cast(TurnState, state), float(lease_until), bool(stop), end
        )

    async def open(
        self, session_id: str, turn_id: str, *, now: float, lease_seconds: float
    ) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            # Expired turns are swept as new ones open: the file does not keep every turn.
            db.execute("DELETE FROM turn_batches WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM turns WHERE expires_at <= ?", (now,))
            db.execute("DELETE FROM turn_claims WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO turns VALUES (?, ?, 'running', ?, 0, NULL, ?)",
                (session_id, turn_id, now + lease_seconds, expires_at(now, self._ttl)),
            )
            db.execute("COMMIT")

        await self._run(run)

    async def append(
        self,
        session_id: str,
        turn_id: str,
        first: int,
        events: Sequence[Encoded],
        *,
        now: float,
        lease_seconds: float,
        final: bool = False,
    ) -> bool:
        expiry = expires_at(now, self._ttl)
        last = first + len(events) - 1

        def run(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT state, stop FROM turns WHERE session_id = ? AND turn_id = ? "
                "AND expires_at > ?",
                (session_id, turn_id, now),
            ).fetchone()
            if row is None or row[0] != "running":
                db.execute("ROLLBACK")
                raise TurnLost(turn_id)
            if events:
                db.execute(
                    "INSERT OR REPLACE INTO turn_batches VALUES (?, ?, ?, ?, ?, ?)",
                    (session_id, turn_id, last, first, dump_events(list(events)), expiry),
                )
            db.execute(
                "UPDATE turns SET lease_until = ?, expires_at = ?, state = ?, end_pos = ? "
                "WHERE session_id = ? AND turn_id = ?",
                (
                    now + lease_seconds,
                    expiry,
                    "finished" if final else "running",
                    last if final else None,
                    session_id,
                    turn_id,
                ),
            )
            db.execute("COMMIT")
            return bool(row[1])

        return await self._run(run)

    async def read(
        self, session_id: str, turn_id: str, *, after: int, now: float
    ) -> TurnRead | None:
        def run(db: sqlite3.Connection) -> TurnRead | None:
            db.execute("BEGIN")
            try:
                row = db.execute(
                    f"{_HEADER} WHERE session_id = ? AND turn_id = ? AND expires_at > ?",
                    (session_id, turn_id, now),
                ).fetchone()
                if row is None:
                    return None
                batches = db.execute(
                    "SELECT first_pos, events FROM turn_batches WHERE session_id = ? "
                    "AND turn_id = ? AND last_pos > ? AND expires_at > ? ORDER BY last_pos",
                    (session_id, turn_id, after, now),
                ).fetchall()
            finally:
                db.execute("COMMIT")
            events = [
                (first + i, event)
                for first, text in batches
                for i, event in enumerate(load_events(text))
                if first + i > after
            ]
            return TurnRead(self._record(session_id, turn_id, row), events)

        return await self._run(run)

    async def latest(self, session_id: str, *, now: float) -> TurnRecord | None:
        def run(db: sqlite3.Connection) -> TurnRecord | None:
            row = db.execute(
                "SELECT turn_id, state, lease_until, stop, end_pos FROM turns "
                "WHERE session_id = ? AND expires_at > ? ORDER BY turn_id DESC LIMIT 1",
                (session_id, now),
            ).fetchone()
            return None if row is None else self._record(session_id, row[0], row[1:])

        return await self._run(run)

    async def request_stop(self, session_id: str, turn_id: str, *, now: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE turns SET stop = 1 WHERE session_id = ? AND turn_id = ? "
                "AND state = 'running' AND expires_at > ?",
                (session_id, turn_id, now),
            )
            return cursor.rowcount == 1

        return await self._run(run)

    async def declare_lost(self, session_id: str, turn_id: str, *, now: float, end: int) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            # Conditional: one winner, and never a producer that renewed its lease meanwhile.
            cursor = db.execute(
                "UPDATE turns SET state = 'lost', end_pos = ? WHERE session_id = ? "
                "AND turn_id = ? AND state = 'running' AND lease_until < ? AND expires_at > ?",
                (end, session_id, turn_id, now, now),
            )
            return cursor.rowcount == 1

        return await self._run(run)

    async def claim(self, key: str, value: str, *, now: float, ttl_seconds: float) -> str | None:
        def run(db: sqlite3.Connection) -> str | None:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT value FROM turn_claims WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT OR REPLACE INTO turn_claims VALUES (?, ?, ?)",
                    (key, value, now + ttl_seconds),
                )
            db.execute("COMMIT")
            return None if row is None else str(row[0])

        return await self._run(run)

    async def release(self, key: str, value: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM turn_claims WHERE key = ? AND value = ?", (key, value))

        await self._run(run)

    async def aclose(self) -> None:
        await self._file.aclose()
