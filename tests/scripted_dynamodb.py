"""DynamoDB's HTTP answers, scripted, with no socket: the client's transport hands each request
the next answer, so the client's signing, retries, backoff, parsing and errors run as they do
against the real service."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from core.aws.client import DynamoDBClient
from core.aws.sigv4 import Credentials
from core.aws.transport import Response, Transport

ERROR_TYPE = "com.amazonaws.dynamodb.v20120810#"
ENDPOINT = "http://127.0.0.1:9"  # never reached: the transport answers first


class ScriptedDynamoDB(Transport):
    """Answers in order; `calls` lists the operations the client sent (retries included)."""

    def __init__(self, *, max_attempts: int = 4) -> None:
        super().__init__(ENDPOINT)
        self.calls: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[Mapping[str, str]] = []
        self._answers: list[tuple[int, dict[str, Any]]] = []
        self.client = DynamoDBClient(
            endpoint=ENDPOINT,
            region="us-east-1",
            credentials=lambda: Credentials("testing", "testing"),
            transport=self,
            max_attempts=max_attempts,
        )

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

    def post(self, headers: Mapping[str, str], body: bytes) -> Response:
        self.calls.append(headers["x-amz-target"].split(".")[1])
        self.headers.append(headers)
        self.requests.append(json.loads(body) if body else {})
        if not self._answers:
            raise AssertionError(f"no scripted answer for {self.calls[-1]}")
        status, answer = self._answers.pop(0)
        data = json.dumps(answer).encode()
        return Response(
            status,
            {
                "content-type": "application/x-amz-json-1.0",
                "x-amzn-requestid": "scripted",
                "x-amz-crc32": str(zlib.crc32(data)),
            },
            data,
        )
