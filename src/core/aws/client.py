"""Clients for AWS's JSON protocol: DynamoDB (the seven operations the adapters use) and
Secrets Manager (GetSecretValue).

Why not botocore's clients: on Lambda every turn writes to DynamoDB before its first byte, so
init builds the client (and reads the secrets), and botocore's import, session and client cost
~90 ms of a cold start, nearly all of the ~95 ms the cold-start budget allows over a bare
FastAPI app (README Performance, DESIGN section 7). The protocol is one signed JSON POST per
call whose body and answer are the low-level API's own shapes, so the adapters keep writing
the calls they wrote for botocore (`put_item(TableName=..., Item=...)`, typed by mypy-boto3).

What this keeps from botocore, on purpose the same:
- retries: its `standard` mode as botocore 1.44 has it (4 tries in all for DynamoDB, 3 for
  others; throttling codes and 429, transient codes and 5xx, errors the model marks retryable,
  broken connections and timeouts; `random() * min(base * 2 ** (try - 1), 20)` seconds
  between tries, base 1 s after throttling and 25 ms (DynamoDB) or 50 ms otherwise, raised by
  an `x-amz-retry-after` header; a retry quota of 500 that a retry spends 5 of after
  throttling and 14 otherwise, and a success refunds), plus one rule botocore lacks: a
  transaction cancelled only by throttling is retried as throttling.
  tests/unit/test_aws_client.py holds each decision and delay to botocore's own classes;
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
import uuid
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

USER_AGENT = "sse-chat-agent"


@dataclass(frozen=True, slots=True)
class Service:
    """What a JSON-protocol service's requests carry (its botocore model's metadata) and how
    botocore's standard mode retries it."""

    signing_name: str
    target_prefix: str
    json_version: str
    max_attempts: int = 3  # tries in all
    transient_backoff: float = 0.05  # seconds: the backoff's base for errors not throttling
    retryable_codes: frozenset[str] = frozenset()  # errors its model marks retryable

    @property
    def content_type(self) -> str:
        return f"application/x-amz-json-{self.json_version}"


DYNAMODB = Service(
    "dynamodb",
    "DynamoDB_20120810",
    "1.0",
    max_attempts=4,
    transient_backoff=0.025,
    retryable_codes=frozenset({"ReplicatedWriteConflictException"}),
)
SECRETS_MANAGER = Service("secretsmanager", "secretsmanager", "1.1")
MAX_ATTEMPTS = DYNAMODB.max_attempts

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


def classify(failure: Exception, service: Service, headers: Mapping[str, str]) -> Retry | None:
    """botocore's standard mode's decision for one failed try (None: do not retry)."""
    retry_after = _retry_after(headers)
    if isinstance(failure, AwsUnreachable):  # no answer, or a body that failed its CRC32
        return Retry(throttling=False)
    if not isinstance(failure, AwsError):
        return None
    if failure.throttled or failure.status == THROTTLING_STATUS:
        return Retry(throttling=True, retry_after=retry_after)
    if (
        failure.code in TRANSIENT_CODES
        or failure.code in service.retryable_codes
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


class JsonClient:
    """One JSON-protocol service at one endpoint: signed calls, retried (blocking)."""

    service: Service

    def __init__(
        self,
        *,
        endpoint: str,
        region: str,
        credentials: Callable[[], Credentials],
        transport: Transport | None = None,
        max_attempts: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self._credentials = credentials
        self._transport = transport or Transport(endpoint)
        self.max_attempts = max(max_attempts or self.service.max_attempts, 1)
        self._sleep = sleep
        self._quota = RetryQuota()

    def close(self) -> None:
        self._transport.close()

    def call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One operation, retried as the module says; AwsError or AwsUnreachable."""
        body = json.dumps(params, separators=(",", ":")).encode()
        attempt, last_cost = 1, 0
        while True:
            headers: Mapping[str, str] = {}
            try:
                answer = self._send(operation, body)
            except (OSError, http.client.HTTPException) as exc:
                failure: Exception = AwsUnreachable(type(exc).__name__)
                failure.__cause__ = exc
            else:
                if answer.status == 200 and _crc32_matches(answer):
                    self._quota.refund(last_cost or NO_RETRY_INCREMENT)
                    return cast("dict[str, Any]", json.loads(answer.body))
                headers = answer.headers
                failure = (
                    AwsUnreachable("CRC32 mismatch") if answer.status == 200 else _error(answer)
                )
            retry = classify(failure, self.service, headers)
            if retry is None or attempt >= self.max_attempts:
                raise failure
            last_cost = THROTTLING_RETRY_COST if retry.throttling else RETRY_COST
            if not self._quota.spend(last_cost):
                raise failure
            delay = retry_delay(
                attempt,
                base=1.0 if retry.throttling else self.service.transient_backoff,
                retry_after=retry.retry_after,
            )
            logger.debug(
                "%s %s: retry %d in %.3f s (%s)",
                self.service.signing_name,
                operation,
                attempt,
                delay,
                failure,
            )
            self._sleep(delay)
            attempt += 1

    def _send(self, operation: str, body: bytes) -> Response:
        headers = sign_post(
            self.endpoint,
            body,
            {
                "content-type": self.service.content_type,
                "x-amz-target": f"{self.service.target_prefix}.{operation}",
            },
            credentials=self._credentials(),
            region=self.region,
            service=self.service.signing_name,
        )
        headers["user-agent"] = USER_AGENT  # unsigned, as botocore leaves it
        return self._transport.post(headers, body)


class DynamoDBClient(JsonClient):
    """DynamoDB's low-level API, the calls the adapters make (blocking; see the module)."""

    service = DYNAMODB

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
        """With a ClientRequestToken unless one is given (botocore fills this idempotency
        token too): a retry after a lost answer then succeeds instead of failing its own
        conditions, for 10 minutes."""
        request = {"ClientRequestToken": str(uuid.uuid4()), **params}
        return cast("TransactWriteItemsOutputTypeDef", self.call("TransactWriteItems", request))


class SecretsManagerClient(JsonClient):
    """Secrets Manager's GetSecretValue (blocking; see the module)."""

    service = SECRETS_MANAGER

    def get_secret_string(self, secret_id: str) -> str:
        """The secret's current string; AwsError if it holds binary data instead."""
        answer = self.call("GetSecretValue", {"SecretId": secret_id})
        value = answer.get("SecretString")
        if not isinstance(value, str):
            raise AwsError(200, "NoSecretString", "the secret holds no string", {})
        return value


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


def _error(answer: Response) -> AwsError:
    """The error body: {"__type": "[namespace#]Code", "message" or "Message", ...}."""
    try:
        body = json.loads(answer.body) if answer.body else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.pop("__type", "")).rpartition("#")[2] or f"HTTP{answer.status}"
    message = str(body.pop("message", body.pop("Message", "")))
    return AwsError(answer.status, code, message, body)
