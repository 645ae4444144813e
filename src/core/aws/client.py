"""A DynamoDB client for the seven operations the adapters use, over DynamoDB's JSON protocol.

Why not botocore's client: on Lambda every turn writes to DynamoDB before its first byte, so
the client is built during init, and botocore's import, session and client cost ~90 ms of a
cold start, nearly all of the ~95 ms the cold-start budget allows over a bare FastAPI app
(README Performance, DESIGN section 7). DynamoDB's protocol is one signed JSON POST per call
whose body and answer are the low-level API's own shapes, so the adapters keep writing the
calls they wrote for botocore (`put_item(TableName=..., Item=...)`, typed by mypy-boto3).

What this keeps from botocore, on purpose the same:
- retries: its `standard` mode (4 tries in all; throttling, transient codes, 5xx, broken
  connections and timeouts; `random() * min(20, 2 ** (try - 1))` seconds between tries; a
  retry quota of 500 that a retry spends 5 of, a timeout 10, and a first-try success refunds 1),
  plus one rule botocore lacks: a transaction cancelled only by throttling is retried too;
- DynamoDB's CRC32 check of every answer (a mismatch is retried like a broken connection);
- credentials, region and endpoint: core.aws.config (botocore itself where they are not
  simply given, as off Lambda).

Calls block: `DynamoDBTable.call` runs them in worker threads, which share a pool of
keep-alive connections.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import select
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from core.aws.sigv4 import Credentials, sign_post

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import (
        BatchWriteItemInputTypeDef,
        BatchWriteItemOutputTypeDef,
        DeleteItemInputTypeDef,
        DeleteItemOutputTypeDef,
        GetItemInputTypeDef,
        GetItemOutputTypeDef,
        PutItemInputTypeDef,
        PutItemOutputTypeDef,
        QueryInputTypeDef,
        QueryOutputTypeDef,
        TransactWriteItemsInputTypeDef,
        TransactWriteItemsOutputTypeDef,
        UpdateItemInputTypeDef,
        UpdateItemOutputTypeDef,
    )
    from typing_extensions import Unpack

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # botocore's standard mode
TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
USER_AGENT = "sse-chat-agent"

# botocore's standard mode (botocore/retries/standard.py), as DynamoDB answers them.
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
# A transaction's participants, cancelled by throttling.
THROTTLING_REASONS = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


class DynamoDBError(Exception):
    """DynamoDB's answer to a call it refused: `code` is its error type, without the
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


class DynamoDBUnreachable(Exception):
    """No answer: the connection failed or timed out on every try (text: the failure's type)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport:
    """POSTs to one endpoint over http.client, reusing idle keep-alive connections.

    http.client, not urllib3 or httpx: both cost a cold start more to import (urllib3 ~15 ms,
    httpx ~15 ms, plus ~30 ms for httpx's TLS context at construction); this one builds its
    TLS context on the first HTTPS connection.
    """

    MAX_IDLE = 10  # botocore's max_pool_connections

    def __init__(
        self, endpoint: str, *, connect_timeout: float = 3.0, read_timeout: float = 10.0
    ) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = parts.path or "/"
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._tls: ssl.SSLContext | None = None

    def post(self, headers: Mapping[str, str], body: bytes) -> Response:
        """One POST; OSError and http.client.HTTPException for a failed connection."""
        connection = self._take()
        try:
            connection.request("POST", self._path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            data = answer.read()
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect()
            if not _dropped(connection):
                return connection
            connection.close()  # closed by the server while idle (or frozen, on Lambda)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(
                self._netloc, timeout=self._connect_timeout, context=self._tls_context()
            )
        else:
            connection = http.client.HTTPConnection(self._netloc, timeout=self._connect_timeout)
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(self._read_timeout)
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                try:  # the CA bundle botocore and httpx use, when installed
                    import certifi

                    cafile: str | None = certifi.where()
                except ImportError:
                    cafile = None
                self._tls = ssl.create_default_context(cafile=cafile)
            return self._tls


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


RETRY_COST = 5
TIMEOUT_RETRY_COST = 10
NO_RETRY_INCREMENT = 1


def retry_delay(attempt: int, *, rand: Callable[[], float] = random.random) -> float:
    """botocore's standard backoff before retry number `attempt` (1-based), in seconds."""
    return rand() * min(20.0, 2.0 ** (attempt - 1))


class DynamoDBClient:
    """DynamoDB's low-level API, the calls the adapters make (blocking; see the module)."""

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        credentials: Callable[[], Credentials],
        transport: Transport | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self._credentials = credentials
        self._transport = transport or Transport(endpoint)
        self.max_attempts = max(max_attempts, 1)
        self._sleep = sleep
        self._quota = RetryQuota()

    def get_item(self, **params: Unpack[GetItemInputTypeDef]) -> GetItemOutputTypeDef:
        return cast("GetItemOutputTypeDef", self.call("GetItem", params))

    def put_item(self, **params: Unpack[PutItemInputTypeDef]) -> PutItemOutputTypeDef:
        return cast("PutItemOutputTypeDef", self.call("PutItem", params))

    def update_item(self, **params: Unpack[UpdateItemInputTypeDef]) -> UpdateItemOutputTypeDef:
        return cast("UpdateItemOutputTypeDef", self.call("UpdateItem", params))

    def delete_item(self, **params: Unpack[DeleteItemInputTypeDef]) -> DeleteItemOutputTypeDef:
        return cast("DeleteItemOutputTypeDef", self.call("DeleteItem", params))

    def query(self, **params: Unpack[QueryInputTypeDef]) -> QueryOutputTypeDef:
        return cast("QueryOutputTypeDef", self.call("Query", params))

    def batch_write_item(
        self, **params: Unpack[BatchWriteItemInputTypeDef]
    ) -> BatchWriteItemOutputTypeDef:
        return cast("BatchWriteItemOutputTypeDef", self.call("BatchWriteItem", params))

    def transact_write_items(
        self, **params: Unpack[TransactWriteItemsInputTypeDef]
    ) -> TransactWriteItemsOutputTypeDef:
        return cast("TransactWriteItemsOutputTypeDef", self.call("TransactWriteItems", params))

    def close(self) -> None:
        self._transport.close()

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One operation, retried as the module says; DynamoDBError or DynamoDBUnreachable."""
        body = json.dumps(params, separators=(",", ":")).encode()
        attempt = 1
        spent = 0
        while True:
            try:
                answer = self._send(operation, body)
            except (OSError, http.client.HTTPException) as exc:
                failure: Exception = DynamoDBUnreachable(type(exc).__name__)
                failure.__cause__ = exc
                cost = TIMEOUT_RETRY_COST if isinstance(exc, TimeoutError) else RETRY_COST
            else:
                if answer.status == 200 and _crc32_matches(answer):
                    self._quota.refund(spent or NO_RETRY_INCREMENT)
                    return cast("dict[str, Any]", json.loads(answer.body))
                if answer.status == 200:
                    failure, cost = DynamoDBUnreachable("CRC32 mismatch"), RETRY_COST
                else:
                    failure, cost = _error(answer), RETRY_COST
                    if not _retryable(failure):
                        raise failure
            if attempt >= self.max_attempts or not self._quota.spend(cost):
                raise failure
            spent += cost
            delay = retry_delay(attempt)
            logger.debug("DynamoDB %s: retry %d in %.3f s (%s)", operation, attempt, delay, failure)
            self._sleep(delay)
            attempt += 1

    def _send(self, operation: str, body: bytes) -> Response:
        headers = sign_post(
            self.endpoint,
            body,
            {"content-type": CONTENT_TYPE, "x-amz-target": TARGET_PREFIX + operation},
            credentials=self._credentials(),
            region=self.region,
            service="dynamodb",
        )
        headers["user-agent"] = USER_AGENT  # unsigned, as botocore leaves it
        return self._transport.post(headers, body)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed reads as ready (EOF); a live one does not."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _crc32_matches(answer: Response) -> bool:
    expected = answer.headers.get("x-amz-crc32")
    return expected is None or zlib.crc32(answer.body) == int(expected)


def _error(answer: Response) -> DynamoDBError:
    """DynamoDB's error body: {"__type": "com.amazonaws.dynamodb.v20120810#Code", "message"}."""
    try:
        body = json.loads(answer.body) if answer.body else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.pop("__type", "")).rpartition("#")[2] or f"HTTP{answer.status}"
    message = str(body.pop("message", body.pop("Message", "")))
    return DynamoDBError(answer.status, code, message, body)


def _retryable(error: DynamoDBError) -> bool:
    return error.throttled or error.code in TRANSIENT_CODES or error.status in TRANSIENT_STATUSES
