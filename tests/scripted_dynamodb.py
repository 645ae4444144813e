"""DynamoDB's HTTP answers, scripted, with no socket: botocore's `before-send` hook hands each
request the next answer, so botocore's retries, backoff, parsing and errors run as they do
against the real service (a Stubber would answer above them, and skip the retries)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse

from core.aws.dynamodb import make_client

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"


class _Body(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


class ScriptedDynamoDB:
    """Answers in order; `calls` lists the operations botocore sent (retries included)."""

    def __init__(self, *, max_attempts: int = 4) -> None:
        self.calls: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._answers: list[tuple[int, dict[str, Any]]] = []
        self.client: DynamoDBClient = make_client(
            max_attempts=max_attempts,
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",  # never reached: the hook answers first
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.client.meta.events.register("before-send.dynamodb", self._send)

    def answer(self, body: dict[str, Any]) -> None:
        self._answers.append((200, body))

    def error(self, code: str, message: str = "", **fields: Any) -> None:
        self._answers.append((400, {"__type": ERROR_TYPE + code, "message": message, **fields}))

    def cancelled(self, *reasons: str) -> None:
        self.error(
            "TransactionCanceledException",
            "Transaction cancelled",
            CancellationReasons=[{"Code": reason} for reason in reasons],
        )

    @property
    def pending(self) -> int:
        return len(self._answers)

    def _send(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        target = request.headers["X-Amz-Target"]
        self.calls.append((target.decode() if isinstance(target, bytes) else target).split(".")[1])
        body = request.body
        self.requests.append(json.loads(body) if body else {})
        if not self._answers:
            raise AssertionError(f"no scripted answer for {self.calls[-1]}")
        status, answer = self._answers.pop(0)
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "scripted"}
        return AWSResponse(request.url, status, headers, _Body(json.dumps(answer).encode()))
