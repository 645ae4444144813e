"""Clients for AWS's JSON protocol: DynamoDB (the seven operations the adapters use) and
Secrets Manager (GetSecretValue).

Why not botocore's clients: on Lambda every turn writes to DynamoDB before its first byte, so
init builds the client (and reads the secrets), and botocore's import, session and client cost
~100 ms of a cold start, as much as the whole margin the cold-start target (1.3x a bare
FastAPI app's first byte) leaves (README Performance, DESIGN section 7). The protocol is one
signed JSON POST per call whose body and answer are the low-level API's own shapes, so the
adapters keep writing the calls they wrote for botocore (`put_item(TableName=..., Item=...)`,
typed by mypy-boto3).

What this keeps from botocore, on purpose the same: its standard retry mode
(core.aws.failures), DynamoDB's CRC32 check of every answer (a mismatch is retried like a
broken connection), the idempotency token of a transaction, and, where Settings does not
simply give them (off Lambda), its credentials, region and endpoint (core.aws.config).

Calls block: `DynamoDBTable.call` runs them in worker threads, which share a pool of
keep-alive connections.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from core.aws.failures import (
    NO_RETRY_INCREMENT,
    RETRY_COST,
    THROTTLING_RETRY_COST,
    AwsError,
    AwsUnreachable,
    RetryQuota,
    classify,
    retry_delay,
)
from core.aws.sigv4 import Credentials, sign_post
from core.aws.transport import Response, Transport

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
        """One operation, retried as core.aws.failures says; AwsError or AwsUnreachable."""
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
                    return _parsed(answer)
                headers = answer.headers
                failure = (
                    AwsUnreachable("CRC32 mismatch") if answer.status == 200 else _error(answer)
                )
            retry = classify(failure, headers, modeled=self.service.retryable_codes)
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


def _crc32_matches(answer: Response) -> bool:
    expected = answer.headers.get("x-amz-crc32")
    if expected is None:
        return True
    return expected.isdigit() and zlib.crc32(answer.body) == int(expected)


def _parsed(answer: Response) -> dict[str, Any]:
    """A success's body; AwsUnreachable (not retried, as botocore's parser errors are not) if
    it is not a JSON object."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AwsUnreachable("an answer that is not a JSON object")
    return body


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
