"""The SQLite SessionStore: the `make serve` default, one file under `.data/` (see
`core.sqlite_file` for how the file is opened and each transaction run)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

from core.errors import SessionBusy, SessionConflict, SessionNotFound, StoreError
from core.model.messages import Message, Role, Status
from core.sessions.port import Page, Session
from core.sessions.rules import (
    check_appendable,
    decode_tool_calls,
    encode_tool_calls,
    expires_at,
    page_window,
    visible_window,
)
from core.sqlite_file import SQLiteFile

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    lock_owner TEXT,
    lock_until REAL
);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    tool_calls TEXT,
    tool_call_id TEXT,
    name TEXT,
    expires_at INTEGER NOT NULL,
    reasoning TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, seq)
);
"""

_NO_SEQ = 1 << 62  # above every sequence number
_MESSAGE_COLUMNS = (
    "role, content, status, created_at, tool_calls, tool_call_id, name, expires_at, reasoning"
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages (session_id, seq, {_MESSAGE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteSessionStore:
    """Sessions in one SQLite file (WAL mode); `":memory:"` keeps them in this process."""

    def __init__(self, path: str | Path, *, ttl_seconds: float = 7 * 24 * 3600) -> None:
        self._file = SQLiteFile(path, schema=_SCHEMA, migrate=_migrate)
        self._ttl = ttl_seconds

    def _connection(self) -> sqlite3.Connection:
        return self._file.connection()

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(operation, failure=_failure)

    @staticmethod
    def _require_live(
        db: sqlite3.Connection, session_id: str, now: float
    ) -> tuple[str, float, float]:
        row = db.execute(
            "SELECT title, created_at, updated_at FROM sessions WHERE id = ? AND expires_at > ?",
            (session_id, now),
        ).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        return cast("tuple[str, float, float]", row)

    async def create(
        self,
        session_id: str,
        *,
        title: str,
        now: float,
        owner: str | None = None,
        lease_seconds: float = 0.0,
        messages: Sequence[Message] = (),
    ) -> None:
        check_appendable(messages)
        lock_until = None if owner is None else now + lease_seconds
        rows = _message_rows(session_id, 0, messages, expires_at(now, self._ttl))

        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            live = db.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND expires_at > ?", (session_id, now)
            ).fetchone()
            if live:
                raise SessionConflict("session id already exists")
            # Expired sessions stay until a create sweeps them (SQLite has no TTL deletion).
            db.execute(
                "DELETE FROM messages WHERE session_id IN "
                "(SELECT id FROM sessions WHERE expires_at <= ?)",
                (now,),
            )
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO sessions (id, title, created_at, updated_at, expires_at, "
                "lock_owner, lock_until, message_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    title,
                    now,
                    now,
                    expires_at(now, self._ttl),
                    owner,
                    lock_until,
                    len(rows),
                ),
            )
            db.executemany(_INSERT_MESSAGE, rows)
            db.execute("COMMIT")

        await self._run(run)

    async def load(self, session_id: str, *, now: float, limit: int | None = None) -> Session:
        def run(db: sqlite3.Connection) -> Session:
            db.execute("BEGIN")  # one snapshot for every read
            rows = db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (session_id, -1 if limit is None else max(limit, 0)),
            ).fetchall()
            stored = [_message_from_row(row) for row in reversed(rows)]
            return self._session(db, session_id, now, visible_window(stored, now=now, limit=limit))

        return await self._run(run)

    def _session(
        self, db: sqlite3.Connection, session_id: str, now: float, messages: tuple[Message, ...]
    ) -> Session:
        """The session with `messages`, read in the transaction the caller opened (and ends)."""
        title, created_at, updated_at = self._require_live(db, session_id, now)
        (last_seq,) = db.execute(
            "SELECT MAX(seq) FROM messages WHERE session_id = ?", (session_id,)
        ).fetchone()
        db.execute("COMMIT")
        return Session(
            id=session_id,
            title=title,
            created_at=created_at,
            updated_at=updated_at,
            messages=messages,
            next_seq=0 if last_seq is None else last_seq + 1,
        )

    async def page(
        self, session_id: str, *, now: float, limit: int, before: int | None = None
    ) -> Page:
        def run(db: sqlite3.Connection) -> Page:
            db.execute("BEGIN")  # one snapshot for every read
            rows = db.execute(
                f"SELECT seq, {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? "
                "AND seq < ? AND expires_at > ? ORDER BY seq DESC LIMIT ?",
                (session_id, _NO_SEQ if before is None else before, now, limit + 1),
            ).fetchall()
            stored = [(row[0], *_message_from_row(row[1:])) for row in rows]
            messages, older = page_window(stored, now=now, limit=limit)
            return Page(self._session(db, session_id, now, messages), older)

        return await self._run(run)

    async def lock(self, session_id: str, *, owner: str, now: float, lease_seconds: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            self._require_live(db, session_id, now)
            # The lease: taken only if free or lapsed, in the same write transaction as the check.
            taken = db.execute(
                "UPDATE sessions SET lock_owner = ?, lock_until = ? WHERE id = ? "
                "AND (lock_owner IS NULL OR lock_until <= ?)",
                (owner, now + lease_seconds, session_id, now),
            ).rowcount
            db.execute("COMMIT")
            if not taken:
                raise SessionBusy()

        await self._run(run)

    async def unlock(self, session_id: str, *, owner: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE sessions SET lock_owner = NULL, lock_until = NULL "
                "WHERE id = ? AND lock_owner = ?",
                (session_id, owner),
            )

        await self._run(run)

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        check_appendable(messages)
        expires = expires_at(now, self._ttl)
        rows = _message_rows(session_id, seq, messages, expires)

        def run(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            self._require_live(db, session_id, now)
            # The primary key (session_id, seq) is the conditional write: a taken sequence
            # raises IntegrityError, `_run` rolls back and reports SessionConflict.
            db.executemany(_INSERT_MESSAGE, rows)
            db.execute(
                "UPDATE sessions SET updated_at = ?, expires_at = ?, "
                "message_count = message_count + ? WHERE id = ?",
                (now, expires, len(rows), session_id),
            )
            db.execute("COMMIT")
            return seq + len(rows)

        return await self._run(run)

    async def delete(self, session_id: str, *, now: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            self._require_live(db, session_id, now)
            db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            db.execute("COMMIT")

        await self._run(run)

    async def aclose(self) -> None:
        await self._file.aclose()


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to the schema (CREATE IF NOT EXISTS keeps old
    tables as they were)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "reasoning" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''")


def _failure(exc: sqlite3.Error) -> Exception:
    # The primary key (session_id, seq) is the conditional append: a taken sequence is a conflict.
    if isinstance(exc, sqlite3.IntegrityError):
        return SessionConflict("a sequence number is taken")
    return StoreError("session store failed")


def _message_from_row(row: tuple[object, ...]) -> tuple[Message, float]:
    role, content, status, created_at, tool_calls, tool_call_id, name, expiry, reasoning = row
    message = Message(
        role=cast(Role, role),
        content=cast(str, content),
        status=cast(Status, status),
        created_at=cast(float, created_at),
        tool_calls=decode_tool_calls(cast("str | None", tool_calls)),
        tool_call_id=cast("str | None", tool_call_id),
        name=cast("str | None", name),
        reasoning=cast(str, reasoning),
    )
    return message, cast(float, expiry)


def _message_rows(
    session_id: str, seq: int, messages: Sequence[Message], expires: int | float
) -> list[tuple[object, ...]]:
    """`messages` as rows of the messages table, at `seq`, `seq + 1`, ..."""
    return [
        (
            session_id,
            seq + offset,
            m.role,
            m.content,
            m.status,
            m.created_at,
            encode_tool_calls(m.tool_calls),
            m.tool_call_id,
            m.name,
            expires,
            m.reasoning,
        )
        for offset, m in enumerate(messages)
    ]
