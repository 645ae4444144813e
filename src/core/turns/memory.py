"""An in-process TurnLog: tests, `SESSION_STORE=memory`, and a reference for the contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.sessions.rules import expires_at
from core.turns.codec import dump_events, load_events
from core.turns.log import Encoded, TurnLost, TurnRead, TurnRecord

_SWEEP_SECONDS = 60.0


@dataclass
class _Turn:
    record: TurnRecord
    expires_at: float
    # One JSON text per batch, not an object per event: a process keeps every turn for the TTL,
    # and millions of small objects would make each full GC pass (and so the relay's p99) slow.
    batches: list[tuple[int, int, str]] = field(default_factory=list)  # (first, last, JSON)


class MemoryTurnLog:
    """Every method runs without awaiting, so each is atomic on the event loop."""

    def __init__(self, *, ttl_seconds: float = 3600) -> None:
        self._ttl = ttl_seconds
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._next_sweep = 0.0

    def _live(self, session_id: str, turn_id: str, now: float) -> _Turn | None:
        turn = self._turns.get((session_id, turn_id))
        return turn if turn is not None and turn.expires_at > now else None

    async def open(
        self, session_id: str, turn_id: str, *, now: float, lease_seconds: float
    ) -> None:
        # Expired turns are swept here, so the process does not keep every turn it ran; at
        # most once a minute, not at every turn (a sweep looks at every turn kept).
        if now >= self._next_sweep:
            self._next_sweep = now + min(self._ttl, _SWEEP_SECONDS)
            for key in [k for k, t in self._turns.items() if t.expires_at <= now]:
                del self._turns[key]
        record = TurnRecord(session_id, turn_id, "running", now + lease_seconds)
        self._turns[(session_id, turn_id)] = _Turn(record, expires_at(now, self._ttl))

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
        turn = self._live(session_id, turn_id, now)
        if turn is None or not turn.record.running:
            raise TurnLost(turn_id)
        if events:
            turn.batches.append((first, first + len(events) - 1, dump_events(list(events))))
        turn.expires_at = expires_at(now, self._ttl)
        stop = turn.record.stop_requested
        # Built whole, not with dataclasses.replace: this runs for every batch of every turn.
        turn.record = TurnRecord(
            session_id,
            turn_id,
            "finished" if final else "running",
            now + lease_seconds,
            stop,
            first + len(events) - 1 if final else None,
        )
        return stop

    async def read(
        self, session_id: str, turn_id: str, *, after: int, now: float
    ) -> TurnRead | None:
        turn = self._live(session_id, turn_id, now)
        if turn is None:
            return None
        events = [
            (first + i, event)
            for first, last, text in turn.batches
            if last > after
            for i, event in enumerate(load_events(text))
            if first + i > after
        ]
        return TurnRead(turn.record, events)

    async def latest(self, session_id: str, *, now: float) -> TurnRecord | None:
        mine = [
            t for (sid, _), t in self._turns.items() if sid == session_id and t.expires_at > now
        ]
        return max(mine, key=lambda t: t.record.turn_id).record if mine else None

    async def request_stop(self, session_id: str, turn_id: str, *, now: float) -> bool:
        turn = self._live(session_id, turn_id, now)
        if turn is None or not turn.record.running:
            return False
        turn.record = replace(turn.record, stop_requested=True)
        return True

    async def declare_lost(self, session_id: str, turn_id: str, *, now: float, end: int) -> bool:
        turn = self._live(session_id, turn_id, now)
        if turn is None or not turn.record.running or turn.record.lease_until >= now:
            return False
        turn.record = replace(turn.record, state="lost", end=end)
        return True

    async def claim(self, key: str, value: str, *, now: float, ttl_seconds: float) -> str | None:
        held = self._claims.get(key)
        if held is not None and held[1] > now:
            return held[0]
        self._claims[key] = (value, now + ttl_seconds)
        return None

    async def release(self, key: str, value: str) -> None:
        held = self._claims.get(key)
        if held is not None and held[0] == value:
            del self._claims[key]

    async def aclose(self) -> None:
        return None
