"""The DynamoDB client's own parts, each against what it replaces: the signature against
botocore's signer, endpoints against botocore's resolver, retries against botocore's standard
mode, the connection pool over a real loopback socket."""

from __future__ import annotations

import http.server
import json
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from botocore.session import Session
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from core.aws import config
from core.aws.client import (
    MAX_ATTEMPTS,
    DynamoDBClient,
    DynamoDBError,
    DynamoDBUnreachable,
    Response,
    Transport,
    retry_delay,
)
from core.aws.sigv4 import Credentials, sign_post
from core.settings import Settings
from tests.scripted_dynamodb import ScriptedDynamoDB

WHEN = datetime(2026, 12, 5, 6, 7, 8, tzinfo=UTC)

# ---- signing ---------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
keys = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=20)


@given(
    access=keys,
    secret=st.text(min_size=1, max_size=40).filter(str.isprintable),
    token=st.none() | st.text("abcdefXYZ0123456789+/=", min_size=1, max_size=300),
    region=st.sampled_from(["us-east-1", "eu-central-1", "cn-north-1", "us-gov-west-1"]),
    endpoint=st.sampled_from(
        [
            "https://dynamodb.us-east-1.amazonaws.com",
            "https://dynamodb.cn-north-1.amazonaws.com.cn:443",
            "http://127.0.0.1:8000",
            "http://localhost:80/",
            "https://[::1]:8443/dynamo db/",
        ]
    ),
    operation=st.sampled_from(["PutItem", "Query", "TransactWriteItems"]),
    value=text,
)
def test_the_signature_is_botocores(
    access: str,
    secret: str,
    token: str | None,
    region: str,
    endpoint: str,
    operation: str,
    value: str,
) -> None:
    body = json.dumps({"TableName": "t", "Item": {"pk": {"S": value}}}).encode()
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "x-amz-target": f"DynamoDB_20120810.{operation}",
    }
    ours = sign_post(
        endpoint,
        body,
        headers,
        credentials=Credentials(access, secret, token),
        region=region,
        service="dynamodb",
        now=WHEN,
    )
    request = AWSRequest(method="POST", url=endpoint, data=body, headers=dict(headers))
    signer = SigV4Auth(BotocoreCredentials(access, secret, token), "dynamodb", region)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("botocore.auth.get_current_datetime", lambda: WHEN)
        signer.add_auth(request)
    theirs = {name.lower(): value for name, value in request.headers.items()}
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


def test_credentials_never_show_their_secrets() -> None:
    shown = repr(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI", "FwoGZXIvYXdzEJr"))
    assert "AKIDEXAMPLE" in shown
    assert "wJalrXUtnFEMI" not in shown and "FwoGZXIvYXdzEJr" not in shown


# ---- endpoints, region, credentials ----------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings(aws_access_key_id="k", aws_secret_access_key="s", **values)


@pytest.fixture
def no_aws_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """botocore's chain sees only what a test writes into tmp_path (no ~/.aws, no env)."""
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path


def _partition_regions() -> list[str]:
    session = Session()
    return [
        region
        for partition in ("aws", "aws-cn", "aws-us-gov")
        for region in session.get_available_regions("dynamodb", partition)
    ]


@pytest.mark.parametrize("region", _partition_regions())
def test_every_region_gets_the_endpoint_botocore_resolves(region: str, no_aws_files: Path) -> None:
    ours = config.resolve(_settings(aws_region=region)).endpoint
    theirs = Session().create_client("dynamodb", region_name=region).meta.endpoint_url
    assert ours == theirs


def test_an_explicit_endpoint_wins_unless_configured_endpoints_are_ignored(
    no_aws_files: Path,
) -> None:
    local = "http://127.0.0.1:8000"
    assert config.resolve(_settings(aws_region="eu-west-1", aws_endpoint_url=local)).endpoint == (
        local
    )
    both = _settings(aws_region="eu-west-1", aws_endpoint_url="x", aws_endpoint_url_dynamodb=local)
    assert config.resolve(both).endpoint == local
    ignored = _settings(
        aws_region="eu-west-1", aws_endpoint_url=local, aws_ignore_configured_endpoint_urls=True
    )
    assert config.resolve(ignored).endpoint == "https://dynamodb.eu-west-1.amazonaws.com"


def test_fips_and_unknown_partitions_are_botocores_to_resolve(
    no_aws_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")  # read by Settings and by botocore
    fips = config.resolve(_settings(aws_region="us-east-1"))
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT")
    assert fips.endpoint == "https://dynamodb-fips.us-east-1.amazonaws.com"
    iso = config.resolve(_settings(aws_region="us-iso-east-1"))
    assert iso.endpoint == "https://dynamodb.us-iso-east-1.c2s.ic.gov"


def test_region_and_credentials_come_from_botocores_chain_when_not_set(
    no_aws_files: Path,
) -> None:
    # GIVEN only a shared config and credentials file, as on a laptop or a build box
    (no_aws_files / "config").write_text("[default]\nregion = ap-southeast-2\n")
    (no_aws_files / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = secretfile\n"
    )
    # WHEN the client's connection is resolved THEN botocore's chain supplied both
    connection = config.resolve(Settings())
    assert connection.region == "ap-southeast-2"
    assert connection.endpoint == "https://dynamodb.ap-southeast-2.amazonaws.com"
    assert connection.credentials() == Credentials("AKIDFILE", "secretfile", None)


def test_lambdas_environment_credentials_are_used_as_given(no_aws_files: Path) -> None:
    settings = Settings(
        aws_region="eu-west-1",
        aws_access_key_id=SecretStr("ASIAENV"),
        aws_secret_access_key=SecretStr("envsecret"),
        aws_session_token=SecretStr("envtoken"),
    )
    assert config.resolve(settings).credentials() == Credentials("ASIAENV", "envsecret", "envtoken")


def test_no_region_or_no_credentials_is_a_clear_unreachable(no_aws_files: Path) -> None:
    with pytest.raises(DynamoDBUnreachable, match="AWS_REGION"):
        config.resolve(_settings())
    with pytest.raises(DynamoDBUnreachable, match="credentials"):
        config.resolve(Settings(aws_region="eu-west-1"))


# ---- retries (botocore's standard mode) ------------------------------------------------------


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedDynamoDB, list[float]]]:
    dynamodb = ScriptedDynamoDB()
    sleeps: list[float] = []
    dynamodb.client._sleep = sleeps.append
    yield dynamodb, sleeps
    assert dynamodb.pending == 0, "every scripted answer was asked for"


def _get(client: DynamoDBClient) -> Any:
    return client.get_item(TableName="t", Key={"pk": {"S": "a"}, "sk": {"S": "b"}})


def test_a_request_carries_the_operation_signature_and_body(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, _ = scripted
    dynamodb.answer({"Item": {"pk": {"S": "a"}}})
    assert _get(dynamodb.client) == {"Item": {"pk": {"S": "a"}}}
    (headers,) = dynamodb.headers
    assert headers["x-amz-target"] == "DynamoDB_20120810.GetItem"
    assert headers["content-type"] == "application/x-amz-json-1.0"
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert dynamodb.requests == [{"TableName": "t", "Key": {"pk": {"S": "a"}, "sk": {"S": "b"}}}]


def test_throttling_5xx_and_transient_codes_are_retried_with_growing_backoff(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.error("ThrottlingException")
    dynamodb.error("InternalServerError")  # 400 with a throttling-free code: 5xx below
    dynamodb._answers[-1] = (500, dynamodb._answers[-1][1])
    dynamodb.error("RequestTimeoutException")
    dynamodb.answer({})
    assert _get(dynamodb.client) == {}
    assert dynamodb.calls == ["GetItem"] * 4
    assert len(sleeps) == 3
    assert all(0 <= delay <= 2 ** (n - 1) for n, delay in enumerate(sleeps, start=1))


def test_the_last_try_raises_what_dynamodb_said(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    for _ in range(MAX_ATTEMPTS):
        dynamodb.error("ProvisionedThroughputExceededException", "slow down")
    with pytest.raises(DynamoDBError) as caught:
        _get(dynamodb.client)
    assert (caught.value.code, caught.value.message) == (
        "ProvisionedThroughputExceededException",
        "slow down",
    )
    assert caught.value.throttled
    assert len(dynamodb.calls) == MAX_ATTEMPTS and len(sleeps) == MAX_ATTEMPTS - 1


def test_a_refusal_is_not_retried_and_keeps_its_fields(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.cancelled("None", "ConditionalCheckFailed")
    with pytest.raises(DynamoDBError) as caught:
        dynamodb.client.transact_write_items(TransactItems=[])
    assert caught.value.code == "TransactionCanceledException"
    assert [r["Code"] for r in caught.value.cancellation_reasons] == [
        "None",
        "ConditionalCheckFailed",
    ]
    assert not caught.value.throttled
    assert sleeps == []


def test_a_transaction_cancelled_only_by_throttling_is_retried(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.cancelled("None", "ThrottlingError")
    dynamodb.answer({})
    dynamodb.client.transact_write_items(TransactItems=[])
    assert dynamodb.calls == ["TransactWriteItems"] * 2 and len(sleeps) == 1


def test_a_body_that_fails_its_crc32_is_fetched_again(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, _ = scripted
    good = dynamodb.post

    def corrupt_once(headers: Any, body: bytes) -> Response:
        answer = good(headers, body)
        if len(dynamodb.calls) == 1:
            return Response(200, {**answer.headers, "x-amz-crc32": "1"}, answer.body)
        return answer

    dynamodb.client._transport = type("T", (), {"post": staticmethod(corrupt_once)})()  # type: ignore[assignment]
    dynamodb.answer({"Item": {"n": {"N": "1"}}})
    dynamodb.answer({"Item": {"n": {"N": "1"}}})
    assert _get(dynamodb.client) == {"Item": {"n": {"N": "1"}}}
    assert dynamodb.calls == ["GetItem"] * 2


def test_an_unparseable_error_body_still_names_its_status(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, _ = scripted
    dynamodb.client._transport = type(  # type: ignore[assignment]
        "T", (), {"post": staticmethod(lambda h, b: Response(413, {}, b"<html>too big</html>"))}
    )()
    with pytest.raises(DynamoDBError) as caught:
        _get(dynamodb.client)
    assert (caught.value.code, caught.value.status) == ("HTTP413", 413)


def test_broken_connections_are_retried_then_unreachable() -> None:
    sleeps: list[float] = []
    tries: list[int] = []

    def refuse(headers: Any, body: bytes) -> Response:
        tries.append(1)
        raise ConnectionRefusedError(111, "refused")

    client = DynamoDBClient(
        endpoint="http://127.0.0.1:9",
        region="us-east-1",
        credentials=lambda: Credentials("k", "s"),
        transport=type("T", (), {"post": staticmethod(refuse)})(),  # type: ignore[arg-type]
        sleep=sleeps.append,
    )
    with pytest.raises(DynamoDBUnreachable, match="ConnectionRefusedError"):
        _get(client)
    assert len(tries) == MAX_ATTEMPTS and len(sleeps) == MAX_ATTEMPTS - 1


def test_the_retry_quota_stops_retries_once_spent(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.client._quota.available = 7  # one retry's worth (5) left, not two
    for _ in range(2):
        dynamodb.error("ThrottlingException")
    with pytest.raises(DynamoDBError):
        _get(dynamodb.client)
    assert len(dynamodb.calls) == 2 and len(sleeps) == 1


def test_backoff_is_full_jitter_capped_at_20_seconds() -> None:
    assert [retry_delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 6, 9)] == [1, 2, 4, 20, 20]
    assert retry_delay(3, rand=lambda: 0.5) == 2


# ---- the connection pool, over a loopback socket ---------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []
    close_after_answer: ClassVar[bool] = False

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(1)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        answer = json.dumps({"echo": json.loads(body)["TableName"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/x-amz-json-1.0")
        self.send_header("content-length", str(len(answer)))
        self.send_header("x-amz-crc32", str(zlib.crc32(answer)))
        self.end_headers()
        self.wfile.write(answer)
        # Closes without saying so, as a server does to a connection idle too long.
        self.close_connection = type(self).close_after_answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"connections": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def _client(endpoint: str) -> DynamoDBClient:
    return DynamoDBClient(
        endpoint=endpoint,
        region="us-east-1",
        credentials=lambda: Credentials("k", "s"),
        transport=Transport(endpoint),
        sleep=lambda _: pytest.fail("no retry expected"),
    )


def test_calls_reuse_one_keep_alive_connection(loopback: tuple[str, type[_Handler]]) -> None:
    endpoint, handler = loopback
    client = _client(endpoint)
    answers = [client.query(TableName=f"t{n}") for n in range(3)]
    assert answers == [{"echo": "t0"}, {"echo": "t1"}, {"echo": "t2"}]
    assert len(handler.connections) == 1
    client.close()


def test_a_connection_the_server_dropped_while_idle_is_replaced_without_a_retry(
    loopback: tuple[str, type[_Handler]],
) -> None:
    endpoint, handler = loopback
    handler.close_after_answer = True
    client = _client(endpoint)
    assert client.query(TableName="a") == {"echo": "a"}
    threading.Event().wait(0.05)  # the server's close reaches the idle connection
    assert client.query(TableName="b") == {"echo": "b"}
    assert len(handler.connections) == 2
    client.close()
