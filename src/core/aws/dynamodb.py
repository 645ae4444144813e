"""One DynamoDB table and the client that reaches it, shared by every adapter that keeps items
in it (sessions, turn logs, quotas): one client, one place that runs calls off the event loop
and turns DynamoDB's failures into the core's errors.

The client (core.aws.client) speaks DynamoDB's JSON protocol with botocore's standard retries;
core.aws.config finds its endpoint, region and credentials.

The table (template.yaml `SessionsTable`) has string keys `pk`/`sk` and the TTL attribute
`expires_at`. The app never creates it or changes its TTL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from core.aws.client import MAX_ATTEMPTS, DynamoDBClient
from core.aws.failures import AwsError, AwsUnreachable
from core.errors import StoreError
from core.settings import Settings

T = TypeVar("T")
logger = logging.getLogger(__name__)

TTL_ATTRIBUTE = "expires_at"
# Refusals the adapters translate themselves (a failed condition says something about the data).
CONDITION_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


class DynamoDBTable:
    """A table name and its DynamoDB client (built on first use when not injected)."""

    def __init__(
        self,
        name: str,
        *,
        client: DynamoDBClient | None = None,
        settings: Settings | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.name = name
        self._client = client
        self._settings = settings
        self._owns_client = client is None  # an injected client is its owner's to close
        self._client_lock = threading.Lock()
        self.max_attempts = max(max_attempts, 1)

    def client(self) -> DynamoDBClient:
        """The client, built once (calls may ask from several worker threads at once)."""
        with self._client_lock:
            if self._client is None:
                from core.aws import config

                settings = self._settings or Settings()
                self._client = config.dynamodb(settings, max_attempts=self.max_attempts)
            return self._client

    async def connect(self) -> None:
        """Open a pooled connection (TLS included) and check the credentials and the table,
        with a read of a key no item has: Lambda's init does this before the first turn."""
        await self.call(
            lambda c: c.get_item(TableName=self.name, Key={"pk": {"S": "-"}, "sk": {"S": "-"}})
        )

    async def call(self, operation: Callable[[DynamoDBClient], T]) -> T:
        """Run `operation` off the event loop (the client retries inside it).

        Failed conditions (`ConditionalCheckFailedException`, `TransactionCanceledException`
        not caused by throttling) propagate as AwsError for the caller to translate;
        anything else is a `StoreError` whose text is safe to show.
        """
        try:
            return await anyio.to_thread.run_sync(lambda: operation(self.client()))
        except AwsError as exc:
            if exc.throttled:
                logger.warning("DynamoDB kept throttling after %d tries", self.max_attempts)
                raise StoreError("session store is busy; try again") from exc
            if exc.code in CONDITION_CODES:
                raise
            logger.warning("DynamoDB call failed: %s", exc.code)
            raise StoreError("session store failed") from exc
        except AwsUnreachable as exc:
            logger.warning("DynamoDB unreachable: %s", exc)
            raise StoreError("session store is unavailable") from exc

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await anyio.to_thread.run_sync(client.close)
