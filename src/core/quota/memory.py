"""The rate limiter in this process's memory: one local server, or tests."""

from __future__ import annotations

from core.quota.port import (
    DAY,
    EVERYONE,
    MINUTE,
    check_daily_tokens,
    check_global_tokens,
    check_request_count,
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
