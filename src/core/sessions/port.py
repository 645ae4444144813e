"""The sessions port: conversation storage, and the shapes it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.model.messages import Message


@dataclass(frozen=True, slots=True)
class Session:
    """A session as loaded for a turn: its messages (oldest first) and the next free sequence."""

    id: str
    title: str
    created_at: float
    updated_at: float
    messages: tuple[Message, ...]
    next_seq: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a session for `GET /sessions/{id}`: `session.messages` oldest first, and
    `older`, the cursor (a sequence number) to pass as `before` for the page before it."""

    session: Session
    older: int | None


class SessionStore(Protocol):
    """Conversation storage: one record per message, appended under a sequence number.

    Invariants every adapter keeps:
    - `append` is atomic (all messages or none) and conditional: a taken sequence number
      raises `SessionConflict`, so concurrent writers never overwrite each other.
    - `lock` is a lease: a crashed holder blocks the session only until `lease_seconds` pass.
    - expired sessions (and expired message records) are invisible on read, even where the
      backing store deletes them late.
    """

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
        """A new session holding `messages` at sequence 0, 1, ... (none: empty); with `owner`,
        its turn lease already taken (as `lock` would). One write: all of it or nothing, and
        `SessionConflict` if the id is live."""
        ...

    async def load(self, session_id: str, *, now: float, limit: int | None = None) -> Session:
        """The session with its last `limit` messages, oldest first; `SessionNotFound`."""
        ...

    async def page(
        self, session_id: str, *, now: float, limit: int, before: int | None = None
    ) -> Page:
        """The newest `limit` live messages stored before sequence `before` (all when None),
        oldest first, with the cursor of the page before; `SessionNotFound`."""
        ...

    async def lock(self, session_id: str, *, owner: str, now: float, lease_seconds: float) -> None:
        """Take the session's turn lease; `SessionBusy` if another owner holds it."""
        ...

    async def unlock(self, session_id: str, *, owner: str) -> None: ...

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        """Store `messages` at `seq`, `seq + 1`, ...; return the next free sequence."""
        ...

    async def delete(self, session_id: str, *, now: float) -> None:
        """Forget the session and its messages; `SessionNotFound` if unknown or expired."""
        ...

    async def aclose(self) -> None: ...
