"""One DynamoDB table and the client that reaches it, shared by every adapter that keeps items
in it (sessions, quotas): one client, one place that runs calls off the event loop and turns
DynamoDB's failures into the core's errors.

The table (template.yaml `SessionsTable`) has string keys `pk`/`sk` and the TTL attribute
`expires_at`. The app never creates it or changes its TTL.
"""

from __future__ import annotations

import atexit
import logging
import random
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import anyio
import anyio.to_thread
from botocore.exceptions import BotoCoreError, ClientError

from core.errors import StoreError

if TYPE_CHECKING:
    from botocore.loaders import Loader
    from mypy_boto3_dynamodb import DynamoDBClient

T = TypeVar("T")
logger = logging.getLogger(__name__)

_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)
_THROTTLING_REASONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


class DynamoDBTable:
    """A table name and a low-level DynamoDB client (built on first use when not injected).

    botocore's own retries are off so the bounded backoff here (`max_attempts`, `base_delay`)
    is the only one: botocore's retry modes do not retry a transaction cancelled by
    throttling (`TransactionCanceledException` with `ThrottlingError` reasons), which this does.
    """

    def __init__(
        self,
        name: str,
        *,
        client: DynamoDBClient | None = None,
        max_attempts: int = 4,
        base_delay: float = 0.05,
    ) -> None:
        self.name = name
        self._client = client
        self._owns_client = client is None  # an injected client is its owner's to close
        self._client_lock = threading.Lock()
        self.max_attempts = max(max_attempts, 1)
        self.base_delay = base_delay

    def client(self) -> DynamoDBClient:
        """The client, built once, in a worker thread (the AWS SDK's import and client cost
        ~0.15 s of cold start).

        botocore's own session, not boto3's: the same client and configuration chain
        (environment, AWS_ENDPOINT_URL_DYNAMODB, credentials), without importing boto3 and
        s3transfer (~10 ms of a cold start).
        """
        with self._client_lock:
            if self._client is None:
                from botocore.config import Config
                from botocore.exceptions import DataNotFoundError, UnknownServiceError
                from botocore.session import Session

                config = Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=3,
                    read_timeout=10,
                )
                session = Session()
                loader = _dynamodb_only_loader()
                if loader is not None:
                    session.register_component("data_loader", loader)
                try:
                    client = session.create_client("dynamodb", config=config)
                except (DataNotFoundError, UnknownServiceError):
                    # A botocore laid out otherwise than the view expects: its own loader.
                    client = Session().create_client("dynamodb", config=config)
                self._client = cast("DynamoDBClient", client)
            return self._client

    async def call(self, operation: Callable[[DynamoDBClient], T]) -> T:
        """Run `operation` off the event loop, retrying throttling with backoff and jitter.

        Conditional failures (`ConditionalCheckFailedException`, `TransactionCanceledException`
        not caused by throttling) propagate for the caller to translate; anything else is a
        `StoreError` whose text is safe to show.
        """
        throttled: ClientError | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                # Full jitter: 4 tries at 50 ms base wait at most 0.05 + 0.1 + 0.2 s in all.
                await anyio.sleep(random.uniform(0, self.base_delay * 2 ** (attempt - 1)))
            try:
                return await anyio.to_thread.run_sync(lambda: operation(self.client()))
            except ClientError as exc:
                code = error_code(exc)
                if is_throttling(exc):
                    throttled = exc
                    continue
                if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                    raise
                logger.warning("DynamoDB call failed: %s", code)
                raise StoreError("session store failed") from exc
            except BotoCoreError as exc:
                logger.warning("DynamoDB unreachable: %s", type(exc).__name__)
                raise StoreError("session store is unavailable") from exc
        logger.warning("DynamoDB kept throttling after %d tries", self.max_attempts)
        raise StoreError("session store is busy; try again") from throttled

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await anyio.to_thread.run_sync(client.close)


def _dynamodb_only_loader() -> Loader | None:
    """A botocore data loader that sees only DynamoDB's models and botocore's shared files.

    Loading a service's model makes botocore's default loader list every service directory
    (~400) to check that the service exists, twice: ~20 ms of a cold start. This one reads the
    same installed files (the runtime's botocore, never a copy that could drift from it)
    through a directory of symbolic links in the temporary directory. None, and botocore's
    default loader, when that directory cannot be made.
    """
    import botocore
    from botocore.loaders import Loader

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
    return Loader(extra_search_paths=[str(view)], include_default_search_paths=False)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def cancellation_reasons(exc: ClientError) -> list[dict[str, str]]:
    reasons = exc.response.get("CancellationReasons", [])
    return cast("list[dict[str, str]]", reasons)


def is_throttling(exc: ClientError) -> bool:
    code = error_code(exc)
    if code in _THROTTLING_CODES:
        return True
    if code != "TransactionCanceledException":
        return False
    codes = {reason.get("Code") for reason in cancellation_reasons(exc)}
    return bool(codes & _THROTTLING_REASONS) and "ConditionalCheckFailed" not in codes
