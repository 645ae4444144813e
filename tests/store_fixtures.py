"""Test helpers for the session stores: a moto DynamoDB server and a fake AWS environment."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

FAKE_REGION = "us-east-1"


class _OneRequestAtATime:
    """WSGI middleware serialising requests.

    moto's DynamoDB backend is not thread-safe: TransactWriteItems snapshots the table and
    restores the snapshot on failure, and conditional updates check, then set, without a lock,
    so concurrent requests could lose each other's writes. Real DynamoDB is linearisable per
    item; serialising moto models that (more strictly), and the store's concurrency tests then
    test the store, not moto's races.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


@functools.cache
def moto_endpoint() -> str:
    """The URL of a moto server on 127.0.0.1 (an OS-chosen free port), one per test process.

    Like `moto.server.ThreadedMotoServer`, plus the serialising middleware above. Tests share
    it: give each test its own table name.
    """
    app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request
    threading.Thread(target=server.serve_forever, name="moto-server", daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def use_fake_aws(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point boto3's DynamoDB client at `endpoint` with fake credentials, ignoring ~/.aws."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", FAKE_REGION)
    monkeypatch.setenv("AWS_REGION", FAKE_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)


def fresh_table(monkeypatch: pytest.MonkeyPatch) -> str:
    """A new table shaped by template.yaml's SessionsTable on the moto server, reached the way
    the app reaches it (AWS_ENDPOINT_URL_DYNAMODB and fake credentials)."""
    import uuid

    import boto3

    from tests.dynamodb_table import create_table_from_template

    use_fake_aws(monkeypatch, moto_endpoint())
    name = f"sessions-{uuid.uuid4().hex[:8]}"
    create_table_from_template(boto3.client("dynamodb"), name)
    return name
