"""One SQLite file shared by the SQLite adapters (sessions, turn log): one connection in WAL
mode, each operation one transaction run in a worker thread while holding the connection.

Stdlib `sqlite3` rather than aiosqlite: aiosqlite also runs a blocking connection in a worker
thread, but one await per statement; here a whole transaction is one plain function.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

T = TypeVar("T")


class SQLiteFile:
    """`path` (`":memory:"` keeps the data in this process), created with `schema`, then brought
    up to date by `migrate` (CREATE IF NOT EXISTS keeps an older file's tables as they were)."""

    def __init__(
        self,
        path: str | Path,
        *,
        schema: str,
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._path = str(path)
        self._schema = schema
        self._migrate = migrate
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        if self._db is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write opens BEGIN IMMEDIATE.
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")  # other processes (uvicorn workers) wait
            db.executescript(self._schema)
            if self._migrate is not None:
                self._migrate(db)
            self._db = db
        return self._db

    async def run(
        self,
        operation: Callable[[sqlite3.Connection], T],
        *,
        failure: Callable[[sqlite3.Error], Exception],
    ) -> T:
        """Run `operation` in a worker thread; an open transaction is rolled back on any error,
        and a `sqlite3.Error` becomes `failure(error)` (the adapter's own error)."""

        def call() -> T:
            with self._lock:
                db = self.connection()
                try:
                    return operation(db)
                except sqlite3.Error as exc:
                    _rollback(db)
                    raise failure(exc) from exc
                except BaseException:
                    _rollback(db)
                    raise

        return await anyio.to_thread.run_sync(call)

    async def aclose(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await anyio.to_thread.run_sync(close)


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back an open transaction; on a full disk even that can fail, and the error that
    matters is the one being handled."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
