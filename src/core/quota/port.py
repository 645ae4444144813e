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
