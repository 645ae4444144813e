"""Per-client limits on what turns cost: requests per minute and tokens per day.

Fixed windows (a minute, a UTC day) keep the counter one atomic increment, which DynamoDB
can do without a read; the burst at a window edge is at most twice the limit.
"""

from __future__ import annotations

import math
from typing import Protocol

from core.errors import RateLimited

MINUTE = 60
DAY = 24 * 3600
EVERYONE = "*"  # the client name of the global daily budget's counter


class RateLimiter(Protocol):
    async def hit(self, client: str, *, now: float) -> None:
        """Count one turn for `client`; `RateLimited` when over a limit (nothing counted)."""
        ...

    async def spend(self, client: str, tokens: int, *, now: float) -> None:
        """Add tokens a finished turn used to the client's daily total."""
        ...


def retry_after(now: float, window: int) -> int:
    return max(1, math.ceil((now // window + 1) * window - now))


def check_request_count(count: int, limit: int, now: float) -> None:
    if limit and count > limit:
        raise RateLimited(
            f"rate limit: at most {limit} requests a minute; try again shortly",
            retry_after=retry_after(now, MINUTE),
        )


def check_daily_tokens(used: int, quota: int, now: float) -> None:
    if quota and used >= quota:
        raise RateLimited(
            f"daily token quota of {quota} reached; try again tomorrow (UTC)",
            retry_after=retry_after(now, DAY),
        )


def check_global_tokens(used: int, quota: int, now: float) -> None:
    if quota and used >= quota:
        raise RateLimited(
            "the service's daily token budget is spent; try again tomorrow (UTC)",
            retry_after=retry_after(now, DAY),
        )


class InProcessRateLimiter:
    """Counters in this process: right for one local server; Lambda uses the DynamoDB one."""

    def __init__(
        self, *, per_minute: int, daily_tokens: int = 0, global_daily_tokens: int = 0
    ) -> None:
        self._per_minute = per_minute
        self._daily_tokens = daily_tokens
        self._global_tokens = global_daily_tokens
        self._requests: dict[tuple[str, int], int] = {}
        self._tokens: dict[tuple[str, int], int] = {}

    async def hit(self, client: str, *, now: float) -> None:
        minute, day = int(now // MINUTE), int(now // DAY)
        check_global_tokens(self._tokens.get((EVERYONE, day), 0), self._global_tokens, now)
        check_daily_tokens(self._tokens.get((client, day), 0), self._daily_tokens, now)
        if not self._per_minute:
            return
        key = (client, minute)
        count = self._requests.get(key, 0) + 1
        check_request_count(count, self._per_minute, now)
        if key not in self._requests:
            # A new window: forget the old ones so memory stays bounded by active clients.
            self._requests = {k: v for k, v in self._requests.items() if k[1] == minute}
        self._requests[key] = count

    async def spend(self, client: str, tokens: int, *, now: float) -> None:
        if tokens <= 0:
            return
        day = int(now // DAY)
        if not any(k[1] == day for k in self._tokens):
            self._tokens.clear()
        for name, quota in ((client, self._daily_tokens), (EVERYONE, self._global_tokens)):
            if quota:
                self._tokens[(name, day)] = self._tokens.get((name, day), 0) + tokens
