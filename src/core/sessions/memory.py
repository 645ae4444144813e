"""An in-process SessionStore: tests, and a reference for the contract the others keep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.errors import SessionBusy, SessionConflict, SessionNotFound
from core.model.messages import Message
from core.sessions.port import Page, Session
from core.sessions.rules import check_appendable, expires_at, page_window, visible_window


@dataclass
class _Record:
    title: str
    created_at: float
    updated_at: float
    expires_at: float
    messages: dict[int, tuple[Message, float]] = field(default_factory=dict)
    lock_owner: str | None = None
    lock_until: float = 0.0


class MemorySessionStore:
    """Every method runs without awaiting, so each is atomic on the event loop."""

    def __init__(self, *, ttl_seconds: float = 7 * 24 * 3600) -> None:
        self._ttl = ttl_seconds
        self._sessions: dict[str, _Record] = {}

    def _live(self, session_id: str, now: float) -> _Record:
        record = self._sessions.get(session_id)
        if record is None or record.expires_at <= now:
            raise SessionNotFound(session_id)
        return record

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
        old = self._sessions.get(session_id)
        if old is not None and old.expires_at > now:
            raise SessionConflict("session id already exists")
        expires = expires_at(now, self._ttl)
        record = _Record(title, now, now, expires)
        if owner is not None:
            record.lock_owner, record.lock_until = owner, now + lease_seconds
        record.messages = {seq: (message, expires) for seq, message in enumerate(messages)}
        self._sessions[session_id] = record

    async def load(self, session_id: str, *, now: float, limit: int | None = None) -> Session:
        record = self._live(session_id, now)
        stored = [record.messages[s] for s in sorted(record.messages)]
        return Session(
            id=session_id,
            title=record.title,
            created_at=record.created_at,
            updated_at=record.updated_at,
            messages=visible_window(stored, now=now, limit=limit),
            next_seq=max(record.messages, default=-1) + 1,
        )

    async def page(
        self, session_id: str, *, now: float, limit: int, before: int | None = None
    ) -> Page:
        record = self._live(session_id, now)
        seqs = sorted((s for s in record.messages if before is None or s < before), reverse=True)
        stored = [(s, *record.messages[s]) for s in seqs]
        messages, older = page_window(stored, now=now, limit=limit)
        return Page(self._session(session_id, record, messages), older)

    @staticmethod
    def _session(session_id: str, record: _Record, messages: tuple[Message, ...]) -> Session:
        return Session(
            id=session_id,
            title=record.title,
            created_at=record.created_at,
            updated_at=record.updated_at,
            messages=messages,
            next_seq=max(record.messages, default=-1) + 1,
        )

    async def lock(self, session_id: str, *, owner: str, now: float, lease_seconds: float) -> None:
        record = self._live(session_id, now)
        if record.lock_owner is not None and record.lock_until > now:
            raise SessionBusy()
        record.lock_owner, record.lock_until = owner, now + lease_seconds

    async def unlock(self, session_id: str, *, owner: str) -> None:
        record = self._sessions.get(session_id)
        if record is not None and record.lock_owner == owner:
            record.lock_owner, record.lock_until = None, 0.0

    async def append(
        self, session_id: str, messages: Sequence[Message], *, seq: int, now: float
    ) -> int:
        check_appendable(messages)
        record = self._live(session_id, now)
        wanted = range(seq, seq + len(messages))
        if any(s in record.messages for s in wanted):
            raise SessionConflict(f"sequence {seq} is taken")
        expires = expires_at(now, self._ttl)
        for s, message in zip(wanted, messages, strict=True):
            record.messages[s] = (message, expires)
        record.updated_at, record.expires_at = now, expires
        return seq + len(messages)

    async def delete(self, session_id: str, *, now: float) -> None:
        self._live(session_id, now)
        del self._sessions[session_id]

    async def aclose(self) -> None:
        return None
