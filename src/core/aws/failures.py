"""What a failed AWS call is, and whether it is tried again: botocore's `standard` retry mode as
botocore 1.44 has it (botocore/retries/standard.py), re-implemented along with the client
(core.aws.client says why); tests/unit/test_aws_client.py holds each decision, quota cost and
delay to botocore's own classes.

- Retried: throttling codes and HTTP 429, transient codes and 5xx, the errors a service's
  model marks retryable, broken connections and timeouts (and DynamoDB's failed CRC32), plus
  one rule botocore lacks: a transaction cancelled only by throttling counts as throttling.
- Backoff: `random() * min(base * 2 ** (try - 1), 20)` seconds, base 1 s after throttling and
  the service's own otherwise (25 ms for DynamoDB, 50 ms for others), raised by a server's
  `x-amz-retry-after` by at most 5 s.
- Quota: 500 for the client; a retry spends 5 after throttling and 14 otherwise, a success
  gives back what its last retry spent (1 without retries); an empty quota stops retrying.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

# botocore's standard mode (botocore/retries/standard.py, 1.44).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
THROTTLING_STATUS = 429
# A transaction's participants, cancelled by throttling.
THROTTLING_REASONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


class AwsError(Exception):
    """A service's answer to a call it refused: `code` is its error type, without the
    namespace (`ConditionalCheckFailedException`); `fields` the rest of its body."""

    def __init__(self, status: int, code: str, message: str, fields: Mapping[str, Any]) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields)

    @property
    def cancellation_reasons(self) -> list[dict[str, str]]:
        """A cancelled transaction's reasons, one per item (`{"Code": "None"}` if it was fine)."""
        return cast("list[dict[str, str]]", self.fields.get("CancellationReasons", []))

    @property
    def throttled(self) -> bool:
        """Throttling, or a transaction cancelled by throttling and by no failed condition."""
        if self.code in THROTTLING_CODES:
            return True
        if self.code != "TransactionCanceledException":
            return False
        codes = {reason.get("Code") for reason in self.cancellation_reasons}
        return bool(codes & THROTTLING_REASONS) and "ConditionalCheckFailed" not in codes


class AwsUnreachable(Exception):
    """No answer: the connection failed or timed out on every try (text: the failure's type)."""


@dataclass
class RetryQuota:
    """botocore's standard retry quota: retries stop while a run of failures has spent it."""

    capacity: int = 500
    available: int = 500
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def spend(self, amount: int) -> bool:
        with self.lock:
            if amount > self.available:
                return False
            self.available -= amount
            return True

    def refund(self, amount: int) -> None:
        with self.lock:
            self.available = min(self.capacity, self.available + amount)


RETRY_COST = 14
THROTTLING_RETRY_COST = 5
NO_RETRY_INCREMENT = 1
MAX_BACKOFF = 20.0
RETRY_AFTER_MAX_EXTRA = 5.0  # seconds a server's x-amz-retry-after may add to the backoff


def retry_delay(
    attempt: int,
    *,
    base: float = 1.0,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """botocore's standard backoff before retry number `attempt` (1-based), in seconds:
    `base` is 1 s after throttling, the service's `transient_backoff` otherwise; a server's
    `retry_after` raises it, by at most RETRY_AFTER_MAX_EXTRA."""
    delay = rand() * min(base * 2.0 ** (attempt - 1), MAX_BACKOFF)
    if retry_after is not None:
        delay = max(delay, min(retry_after, delay + RETRY_AFTER_MAX_EXTRA))
    return delay


@dataclass(frozen=True, slots=True)
class Retry:
    """Whether a failed try is worth another, and if so what kind of failure it was."""

    throttling: bool
    retry_after: float | None = None


def classify(
    failure: Exception, headers: Mapping[str, str], *, modeled: frozenset[str] = frozenset()
) -> Retry | None:
    """botocore's standard mode's decision for one failed try (None: do not retry);
    `modeled`: the error codes the service's model marks retryable."""
    retry_after = _retry_after(headers)
    if isinstance(failure, AwsUnreachable):  # no answer, or a body that failed its CRC32
        return Retry(throttling=False)
    if not isinstance(failure, AwsError):
        return None
    if failure.throttled or failure.status == THROTTLING_STATUS:
        return Retry(throttling=True, retry_after=retry_after)
    if (
        failure.code in TRANSIENT_CODES
        or failure.code in modeled
        or failure.status in TRANSIENT_STATUSES
    ):
        return Retry(throttling=False, retry_after=retry_after)
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("x-amz-retry-after")
    try:
        seconds = int(value) / 1000 if value is not None else None
    except (ValueError, OverflowError):
        return None
    return seconds if seconds is not None and seconds >= 0 else None
