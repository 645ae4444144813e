"""One DynamoDB table and the client that reaches it, shared by every adapter that keeps items
in it (sessions, turn logs, quotas): one client, one place that runs calls off the event loop
and turns DynamoDB's failures into the core's errors.

Retries are botocore's own `standard` mode (throttling, transient errors, broken connections;
jittered exponential backoff, a retry quota), plus one rule it lacks: a transaction cancelled
only because a participant was throttled (`TransactionCanceledException` with `ThrottlingError`
reasons) is retried the same way, through botocore's `needs-retry` hook and its own backoff.

The table (template.yaml `SessionsTable`) has string keys `pk`/`sk` and the TTL attribute
`expires_at`. The app never creates it or changes its TTL.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.to_thread
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import StoreError

if TYPE_CHECKING:
    from botocore.loaders import Loader
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # botocore's own default for DynamoDB in standard mode
TTL_ATTRIBUTE = "expires_at"
_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_THROTTLING_REASONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


def make_client(
    *, max_attempts: int = MAX_ATTEMPTS, data_loader: Loader | None = None, **kwargs: Any
) -> DynamoDBClient:
    """A low-level DynamoDB client with the retry policy above (`kwargs` go to botocore:
    region, endpoint, credentials). The AWS SDK's import and client cost ~0.1 s: callers build
    it off the event loop.

    botocore's own session, not boto3's: the same client and configuration chain (environment,
    AWS_ENDPOINT_URL_DYNAMODB, credentials) without importing boto3 and s3transfer (~10 ms of a
    cold start), and a data loader that sees only DynamoDB's models (~20 ms more).
    """
    from botocore.config import Config
    from botocore.exceptions import DataNotFoundError, UnknownServiceError
    from botocore.session import Session

    config = Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=3,
        read_timeout=10,
    )
    session = Session()
    loader = data_loader or _dynamodb_only_loader()
    if loader is not None:
        session.register_component("data_loader", loader)
    try:
        client = session.create_client("dynamodb", config=config, **kwargs)
    except (DataNotFoundError, UnknownServiceError):
        # A botocore laid out otherwise than the view expects: its own loader.
        client = Session().create_client("dynamodb", config=config, **kwargs)
    # A needs-retry handler returns the delay before retrying (the stubs say None).
    client.meta.events.register(
        "needs-retry.dynamodb.TransactWriteItems",
        _ThrottledTransactions(max_attempts),  # type: ignore[arg-type]
    )
    return cast("DynamoDBClient", client)


def _dynamodb_only_loader() -> Loader | None:
    """A botocore data loader that sees only DynamoDB's models and botocore's shared files.

    Loading a service's model makes botocore's default loader list every service directory
    (~400) to check that the service exists, twice: ~20 ms of a cold start. This one reads the
    same installed files (the runtime's botocore, never a copy that could drift from it)
    through a directory of symbolic links in the temporary directory, made once per process.
    None, and botocore's default loader, when that directory cannot be made.
    """
    global _loader_view
    import botocore
    from botocore.loaders import Loader

    if _loader_view is None:
        data = Path(botocore.__file__).parent / "data"
        if not (data / "dynamodb").is_dir():
            return None
        try:
            view = Path(tempfile.mkdtemp(prefix="botocore-dynamodb-"))
            atexit.register(shutil.rmtree, view, ignore_errors=True)
            for entry in data.iterdir():
                if entry.name == "dynamodb" or not entry.is_dir():
                    (view / entry.name).symlink_to(entry)
        except OSError as exc:
            logger.info("botocore's default data loader: %s", type(exc).__name__)
            return None
        _loader_view = view
    return Loader(extra_search_paths=[str(_loader_view)], include_default_search_paths=False)


_loader_view: Path | None = None


class _ThrottledTransactions:
    """botocore's `needs-retry` handler for transactions cancelled by throttling: the delay
    comes from botocore's standard backoff; None leaves the decision to botocore."""

    def __init__(self, max_attempts: int) -> None:
        self._max_attempts = max_attempts

    def __call__(self, response: Any = None, attempts: int = 1, **_: Any) -> float | None:
        if response is None or attempts >= self._max_attempts:
            return None
        parsed = response[1]
        if not _throttled_only(
            str(parsed.get("Error", {}).get("Code", "")), parsed.get("CancellationReasons", [])
        ):
            return None
        return retry_delay(attempts)


def retry_delay(attempt: int) -> float:
    """botocore's standard backoff before retry number `attempt` (1-based) of a DynamoDB call."""
    from botocore.retries.standard import ExponentialBackoff, RetryContext

    delay: float = ExponentialBackoff(service_name="dynamodb").delay_amount(
        RetryContext(attempt_number=attempt)
    )
    return delay


class DynamoDBTable:
    """A table name and a low-level boto3 client (built on first use when not injected)."""

    def __init__(
        self,
        name: str,
        *,
        client: DynamoDBClient | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.name = name
        self._client = client
        self._owns_client = client is None  # an injected client is its owner's to close
        self._client_lock = threading.Lock()
        self.max_attempts = max(max_attempts, 1)

    def client(self) -> DynamoDBClient:
        """The client, built once (in a worker thread: boto3's default session is not
        thread-safe)."""
        with self._client_lock:
            if self._client is None:
                self._client = make_client(max_attempts=self.max_attempts)
            return self._client

    async def call(self, operation: Callable[[DynamoDBClient], T]) -> T:
        """Run `operation` off the event loop (botocore retries inside it).

        Conditional failures (`ConditionalCheckFailedException`, `TransactionCanceledException`
        not caused by throttling) propagate for the caller to translate; anything else is a
        `StoreError` whose text is safe to show.
        """
        try:
            return await anyio.to_thread.run_sync(lambda: operation(self.client()))
        except ClientError as exc:
            code = error_code(exc)
            if is_throttling(exc):
                logger.warning("DynamoDB kept throttling after %d tries", self.max_attempts)
                raise StoreError("session store is busy; try again") from exc
            if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise
            logger.warning("DynamoDB call failed: %s", code)
            raise StoreError("session store failed") from exc
        except BotoCoreError as exc:
            logger.warning("DynamoDB unreachable: %s", type(exc).__name__)
            raise StoreError("session store is unavailable") from exc

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await anyio.to_thread.run_sync(client.close)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cancellation_reasons(exc: ClientError) -> list[dict[str, str]]:
    reasons = exc.response.get("CancellationReasons", [])
    return cast("list[dict[str, str]]", reasons)


def is_throttling(exc: ClientError) -> bool:
    return _throttled_only(error_code(exc), cancellation_reasons(exc))


def _throttled_only(code: str, reasons: list[dict[str, str]]) -> bool:
    """Throttling, or a transaction cancelled by throttling and by no failed condition."""
    if code in _THROTTLING_CODES:
        return True
    if code != "TransactionCanceledException":
        return False
    codes = {reason.get("Code") for reason in reasons}
    return bool(codes & _THROTTLING_REASONS) and "ConditionalCheckFailed" not in codes
