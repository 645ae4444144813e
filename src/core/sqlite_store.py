"""The SQLite SessionStore: the `make serve` default, one file under `.data/`.

Stdlib `sqlite3` rather than aiosqlite: aiosqlite also runs a blocking connection in a worker
thread, but one await per statement; here each operation (a whole transaction) is one plain
function run by `anyio.to_thread.run_sync`, with one connection guarded by a lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

import anyio.to_thread

from core.errors import SessionBusy, SessionConflict, SessionNotFound, StoreError
from core.history import (
    check_appendable,
    decode_tool_calls,
    encode_tool_calls,
    expires_at,
    page_window,
    visible_window,
)
from core.messages import Message, Page, Role, Session, Status

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


class SQLiteSessionStore:
    """Sessions in one SQLite file (WAL mode); `":memory:"` keeps them in this process."""

    def __init__(self, path: str | Path, *, ttl_seconds: float = 7 * 24 * 3600) -> None:
        self._path = str(path)
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write opens BEGIN IMMEDIATE.
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")  # other processes (uvicorn workers) wait
            db.executescript(_SCHEMA)
            _migrate(db)
            self._db = db
        return self._db

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run one operation in a worker thread, holding the connection for its whole span."""

        def call() -> T:
            with self._lock:
                db = self._connection()
                try:
                    return operation(db)
                except sqlite3.Error as exc:
                    _rollback(db)
                    if isinstance(exc, sqlite3.IntegrityError):
                        raise SessionConflict("a sequence number is taken") from exc
                    raise StoreError("session store failed") from exc
                except BaseException:
                    _rollback(db)
                    raise

        return await anyio.to_thread.run_sync(call)

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

    async def create(self, session_id: str, *, title: str, now: float) -> None:
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
                "INSERT INTO sessions (id, title, created_at, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, title, now, now, expires_at(now, self._ttl)),
            )
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
        rows = [
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

        def run(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            self._require_live(db, session_id, now)
            # The primary key (session_id, seq) is the conditional write: a taken sequence
            # raises IntegrityError, `_run` rolls back and reports SessionConflict.
            db.executemany(
                f"INSERT INTO messages (session_id, seq, {_MESSAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
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
        def run() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await anyio.to_thread.run_sync(run)


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a file made by an older version up to the schema (CREATE IF NOT EXISTS keeps old
    tables as they were)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "reasoning" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT ''")


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back an open transaction; on a full disk even that can fail, and the error that
    matters is the one being handled."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


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
