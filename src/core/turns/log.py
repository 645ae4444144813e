"""The turn log port: a turn's events, kept so any reader on any instance can follow or resume.

A turn is a header (state, lease, stop flag, end) plus batches of events, each batch keyed by
the position of its last event, so "events after P" is every batch whose last position is over P.

Invariants every adapter keeps:
- `open` writes the header `running`; `append` stores a batch and renews the header's lease in
  one call, returns whether a stop was requested, and raises `TurnLost` once the header is no
  longer running (another reader declared it lost): the producer must stop writing.
- `finish` / a final `append` and `declare_lost` set `end`, the number of events that count;
  readers ignore anything stored past `end` (a slow producer's last batch after it was lost).
- `declare_lost` is conditional: only a running turn whose lease has passed, one winner.
- expired items (TURN_EVENTS_TTL_SECONDS) are invisible on read, even where the backing store
  deletes them late; an idempotency claim lives `ttl` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

TurnState = Literal["running", "finished", "lost"]
Encoded = Any  # one event as the codec encodes it (`core.turns.codec`): JSON-able


class TurnLost(Exception):
    """The turn's header is no longer running: a reader declared its producer lost."""


@dataclass(frozen=True, slots=True)
class TurnRecord:
    session_id: str
    turn_id: str
    state: TurnState
    lease_until: float
    stop_requested: bool = False
    end: int | None = None  # events that count, once the turn ended (finished or lost)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class TurnRead:
    """One consistent read: the header, and the stored events after a position, in order."""

    record: TurnRecord
    events: list[tuple[int, Encoded]]

    @property
    def last_position(self) -> int | None:
        return self.events[-1][0] if self.events else None


class TurnLog(Protocol):
    async def open(
        self, session_id: str, turn_id: str, *, now: float, lease_seconds: float
    ) -> None: ...

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
        """Store `events` at positions `first`, `first + 1`, ... (none: a heartbeat) and renew
        the lease; `final` ends the turn (`finished`). True when a stop was requested."""
        ...

    async def read(
        self, session_id: str, turn_id: str, *, after: int, now: float
    ) -> TurnRead | None:
        """The header and the events after position `after`; None when unknown or expired."""
        ...

    async def latest(self, session_id: str, *, now: float) -> TurnRecord | None:
        """The session's newest turn, running or not; None when it has none (alive)."""
        ...

    async def request_stop(self, session_id: str, turn_id: str, *, now: float) -> bool:
        """Set the stop flag of a running turn; False when it is not running."""
        ...

    async def declare_lost(self, session_id: str, turn_id: str, *, now: float, end: int) -> bool:
        """Mark a running turn whose lease passed before `now` as lost, with `end` events;
        True for the one caller that won."""
        ...

    async def claim(self, key: str, value: str, *, now: float, ttl_seconds: float) -> str | None:
        """Claim `key` for `value`; None when claimed, else the live claim's value."""
        ...

    async def release(self, key: str, value: str) -> None:
        """Drop the claim of `key` if it still holds `value`."""
        ...

    async def aclose(self) -> None: ...


def visible(read: TurnRead) -> TurnRead:
    """Only the events that count: none past `end` once the turn has ended."""
    end = read.record.end
    if end is None:
        return read
    return TurnRead(read.record, [(p, e) for p, e in read.events if p <= end])
