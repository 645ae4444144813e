"""The DynamoDB client's own parts, each against what it replaces: the signature against
botocore's signer, endpoints against botocore's resolver, retries against botocore's standard
mode, the connection pool over a real loopback socket."""

from __future__ import annotations

import http.server
import json
import logging
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
    DYNAMODB,
    MAX_ATTEMPTS,
    SECRETS_MANAGER,
    DynamoDBClient,
    SecretsManagerClient,
    Service,
)
from core.aws.failures import AwsError, AwsUnreachable, retry_delay
from core.aws.sigv4 import Credentials, sign_post
from core.aws.transport import Response, Transport
from core.settings import Settings
from handlers.container import SECRET_MAX_AGE_SECONDS, Secrets
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


def _partition_regions() -> list[tuple[Service, str]]:
    session = Session()
    return [
        (service, region)
        for service in (DYNAMODB, SECRETS_MANAGER)
        for partition in ("aws", "aws-cn", "aws-us-gov")
        for region in session.get_available_regions(service.signing_name, partition)
    ]


@pytest.mark.parametrize(("service", "region"), _partition_regions())
def test_every_region_gets_the_endpoint_botocore_resolves(
    service: Service, region: str, no_aws_files: Path
) -> None:
    ours = config.resolve(_settings(aws_region=region), service).endpoint
    client = Session().create_client(service.signing_name, region_name=region)  # type: ignore[call-overload]
    assert ours == client.meta.endpoint_url


def test_an_explicit_endpoint_wins_unless_configured_endpoints_are_ignored(
    no_aws_files: Path,
) -> None:
    local = "http://127.0.0.1:8000"
    given = _settings(aws_region="eu-west-1", aws_endpoint_url=local)
    assert config.resolve(given, DYNAMODB).endpoint == local
    both = _settings(aws_region="eu-west-1", aws_endpoint_url="x", aws_endpoint_url_dynamodb=local)
    assert config.resolve(both, DYNAMODB).endpoint == local
    ignored = _settings(
        aws_region="eu-west-1", aws_endpoint_url=local, aws_ignore_configured_endpoint_urls=True
    )
    assert config.resolve(ignored, DYNAMODB).endpoint == "https://dynamodb.eu-west-1.amazonaws.com"


def test_fips_and_unknown_partitions_are_botocores_to_resolve(
    no_aws_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")  # read by Settings and by botocore
    fips = config.resolve(_settings(aws_region="us-east-1"), DYNAMODB)
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT")
    assert fips.endpoint == "https://dynamodb-fips.us-east-1.amazonaws.com"
    iso = config.resolve(_settings(aws_region="us-iso-east-1"), DYNAMODB)
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
    connection = config.resolve(Settings(), DYNAMODB)
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
    assert config.resolve(settings, DYNAMODB).credentials() == Credentials(
        "ASIAENV", "envsecret", "envtoken"
    )


def test_no_region_or_no_credentials_is_a_clear_unreachable(no_aws_files: Path) -> None:
    with pytest.raises(AwsUnreachable, match="AWS_REGION"):
        config.resolve(_settings(), DYNAMODB)
    with pytest.raises(AwsUnreachable, match="credentials"):
        config.resolve(Settings(aws_region="eu-west-1"), DYNAMODB)


def test_each_service_has_its_own_explicit_endpoint(no_aws_files: Path) -> None:
    settings = _settings(
        aws_region="eu-west-1",
        aws_endpoint_url_dynamodb="http://127.0.0.1:1",
        aws_endpoint_url_secrets_manager="http://127.0.0.1:2",
    )
    assert config.resolve(settings, DYNAMODB).endpoint == "http://127.0.0.1:1"
    assert config.resolve(settings, SECRETS_MANAGER).endpoint == "http://127.0.0.1:2"


# ---- Secrets Manager -------------------------------------------------------------------------


def _secrets_manager(answers: list[Response], seen: list[Any]) -> SecretsManagerClient:
    def post(headers: Any, body: bytes) -> Response:
        seen.append((headers, json.loads(body)))
        return answers.pop(0)

    return SecretsManagerClient(
        endpoint="http://127.0.0.1:9",
        region="eu-west-1",
        credentials=lambda: Credentials("k", "s"),
        transport=type("T", (), {"post": staticmethod(post)})(),  # type: ignore[arg-type]
    )


def test_a_secret_is_read_with_secrets_managers_json_1_1() -> None:
    seen: list[Any] = []
    client = _secrets_manager([Response(200, {}, b'{"SecretString": "sk-1", "Name": "k"}')], seen)
    assert client.get_secret_string("arn:aws:secretsmanager:eu-west-1:1:secret:k") == "sk-1"
    ((headers, body),) = seen
    assert headers["x-amz-target"] == "secretsmanager.GetSecretValue"
    assert headers["content-type"] == "application/x-amz-json-1.1"
    assert "/eu-west-1/secretsmanager/aws4_request" in headers["authorization"]
    assert body == {"SecretId": "arn:aws:secretsmanager:eu-west-1:1:secret:k"}


def test_a_missing_or_binary_secret_is_an_error_with_its_code() -> None:
    missing = Response(400, {}, b'{"__type": "ResourceNotFoundException", "Message": "no"}')
    binary = Response(200, {}, b'{"SecretBinary": "AAEC"}')
    client = _secrets_manager([missing, binary], [])
    with pytest.raises(AwsError) as caught:
        client.get_secret_string("gone")
    assert (caught.value.code, caught.value.message) == ("ResourceNotFoundException", "no")
    with pytest.raises(AwsError, match="NoSecretString"):
        client.get_secret_string("binary")


async def test_a_secret_read_is_kept_five_minutes_then_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("handlers.container.time.monotonic", lambda: clock[0])
    values = iter(["sk-old\n", "sk-new"])
    reads: list[str] = []

    async def read(secret_id: str) -> str:
        reads.append(secret_id)
        return next(values)

    secrets = Secrets(Settings(openai_api_key_secret="arn:key"), read=read)
    assert await secrets.api_key() == "sk-old"  # stripped
    clock[0] += SECRET_MAX_AGE_SECONDS - 1
    assert await secrets.api_key() == "sk-old"
    clock[0] += 1
    assert await secrets.api_key() == "sk-new"  # rotated: picked up once the 5 minutes are up
    assert reads == ["arn:key", "arn:key"]


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
    with pytest.raises(AwsError) as caught:
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
    with pytest.raises(AwsError) as caught:
        dynamodb.client.transact_write_items(TransactItems=[])
    assert caught.value.code == "TransactionCanceledException"
    assert [r["Code"] for r in caught.value.cancellation_reasons] == [
        "None",
        "ConditionalCheckFailed",
    ]
    assert not caught.value.throttled
    assert sleeps == []


def test_a_transaction_carries_one_idempotency_token_across_its_retries(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    # GIVEN a transaction whose first answer is lost (a 500 after DynamoDB may have applied it)
    dynamodb, _ = scripted
    dynamodb.error("InternalServerError")
    dynamodb._answers[-1] = (500, dynamodb._answers[-1][1])
    dynamodb.answer({})
    dynamodb.client.transact_write_items(TransactItems=[])
    # THEN the retry sends the same ClientRequestToken (DynamoDB answers it as the first),
    # the one member botocore's models mark as an idempotency token in the calls the client has
    first, retry = (request["ClientRequestToken"] for request in dynamodb.requests)
    assert first == retry and len(first) == 36
    model = Session().get_service_model("dynamodb")
    tokens = {
        operation: [
            name
            for name, shape in model.operation_model(operation).input_shape.members.items()
            if shape.metadata.get("idempotencyToken")
        ]
        for operation in (
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "BatchWriteItem",
            "TransactWriteItems",
        )
    }
    assert {op: names for op, names in tokens.items() if names} == {
        "TransactWriteItems": ["ClientRequestToken"]
    }


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


def test_a_success_that_is_not_a_json_object_is_unreachable_not_a_crash(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.client._transport = type(  # type: ignore[assignment]
        "T", (), {"post": staticmethod(lambda h, b: Response(200, {}, b"<html>proxy</html>"))}
    )()
    with pytest.raises(AwsUnreachable, match="not a JSON object"):
        _get(dynamodb.client)
    assert sleeps == []


def test_an_unparseable_error_body_still_names_its_status(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, _ = scripted
    dynamodb.client._transport = type(  # type: ignore[assignment]
        "T", (), {"post": staticmethod(lambda h, b: Response(413, {}, b"<html>too big</html>"))}
    )()
    with pytest.raises(AwsError) as caught:
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
    with pytest.raises(AwsUnreachable, match="ConnectionRefusedError"):
        _get(client)
    assert len(tries) == MAX_ATTEMPTS and len(sleeps) == MAX_ATTEMPTS - 1


def test_the_retry_quota_stops_retries_once_spent(
    scripted: tuple[ScriptedDynamoDB, list[float]],
) -> None:
    dynamodb, sleeps = scripted
    dynamodb.client._quota.available = 7  # one retry's worth (5) left, not two
    for _ in range(2):
        dynamodb.error("ThrottlingException")
    with pytest.raises(AwsError):
        _get(dynamodb.client)
    assert len(dynamodb.calls) == 2 and len(sleeps) == 1


def test_backoff_is_full_jitter_capped_at_20_seconds() -> None:
    assert [retry_delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 6, 9)] == [1, 2, 4, 20, 20]
    assert retry_delay(3, rand=lambda: 0.5) == 2


# One failed try of a DynamoDB PutItem: (HTTP status, error code, response headers) or a broken
# connection. Everything botocore's standard mode tells apart. (A modelled error comes only from
# the operations that model it, so the client keeps one set of them for every operation.)
FAILURES: list[tuple[int, str, dict[str, str]] | Exception] = [
    (400, "ProvisionedThroughputExceededException", {}),
    (400, "ThrottlingException", {}),
    (400, "RequestLimitExceeded", {}),
    (400, "LimitExceededException", {}),
    (400, "ConditionalCheckFailedException", {}),
    (400, "TransactionConflictException", {}),
    (400, "ValidationException", {}),
    (400, "ResourceNotFoundException", {}),
    (400, "ReplicatedWriteConflictException", {}),  # modelled retryable
    (400, "RequestTimeoutException", {}),
    (400, "PriorRequestNotComplete", {}),
    (500, "InternalServerError", {}),
    (502, "", {}),
    (503, "ServiceUnavailable", {"x-amz-retry-after": "3000"}),
    (504, "", {"x-amz-retry-after": "soon"}),
    (413, "", {}),
    (429, "TooManyRequestsException", {}),
    (429, "SomethingNew", {"x-amz-retry-after": "250"}),
    (400, "ThrottlingException", {"x-amz-retry-after": "12000"}),
    ConnectionResetError(104, "reset"),
    TimeoutError("read timed out"),
]


def _botocores(failure: tuple[int, str, dict[str, str]] | Exception, attempt: int) -> Any:
    from botocore.awsrequest import AWSResponse
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
    from botocore.retries.standard import RetryContext

    operation = Session().get_service_model("dynamodb").operation_model("PutItem")
    if isinstance(failure, Exception):
        caught = (
            ReadTimeoutError(endpoint_url="x")
            if isinstance(failure, TimeoutError)
            else EndpointConnectionError(endpoint_url="x")
        )
        return RetryContext(attempt, operation, caught_exception=caught, request_context={})
    status, code, headers = failure
    parsed = {"Error": {"Code": code, "Message": ""}} if code else {"Error": {"Code": str(status)}}
    response = AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", status, headers, None)
    return RetryContext(attempt, operation, parsed, response, request_context={})


def _ours(failure: tuple[int, str, dict[str, str]] | Exception) -> Any:
    from core.aws.failures import AwsUnreachable, classify

    if isinstance(failure, Exception):
        return classify(AwsUnreachable(type(failure).__name__), {})
    status, code, headers = failure
    error = AwsError(status, code or f"HTTP{status}", "", {})
    return classify(error, headers, modeled=DYNAMODB.retryable_codes)


@pytest.mark.parametrize("failure", FAILURES, ids=repr)
def test_each_retry_decision_cost_and_delay_is_botocores_standard_mode(
    failure: tuple[int, str, dict[str, str]] | Exception,
) -> None:
    from botocore.retries.quota import RetryQuota as BotocoreQuota
    from botocore.retries.standard import (
        ExponentialBackoff,
        RetryEventAdapter,
        RetryQuotaChecker,
        StandardRetryConditions,
        ThrottlingErrorDetector,
    )

    from core.aws.failures import RETRY_COST, THROTTLING_RETRY_COST

    detector = ThrottlingErrorDetector(RetryEventAdapter())
    ours = _ours(failure)
    assert (ours is not None) == StandardRetryConditions(max_attempts=4).is_retryable(
        _botocores(failure, 1)
    )
    if ours is None:
        return
    context = _botocores(failure, 1)
    RetryQuotaChecker(BotocoreQuota(), detector).acquire_retry_quota(context)
    cost = THROTTLING_RETRY_COST if ours.throttling else RETRY_COST
    assert cost == context.request_context["retry_quota_capacity"]
    backoff = ExponentialBackoff(
        random=lambda: 1.0, service_name="dynamodb", throttling_detector=detector
    )
    for attempt in (1, 2, 3):
        base = 1.0 if ours.throttling else DYNAMODB.transient_backoff
        delay = retry_delay(attempt, base=base, retry_after=ours.retry_after, rand=lambda: 1.0)
        assert delay == pytest.approx(backoff.delay_amount(_botocores(failure, attempt)))


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


def test_debug_logs_of_retries_hold_no_credentials_or_signature(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN LOG_LEVEL=DEBUG and a call that is throttled once, with temporary credentials
    dynamodb = ScriptedDynamoDB()
    dynamodb.client._sleep = lambda _: None
    dynamodb.client._credentials = lambda: Credentials("ASIAKEYID", "secret-key-x", "token-x")
    dynamodb.error("ThrottlingException", "Rate exceeded")
    dynamodb.answer({})
    with caplog.at_level(logging.DEBUG):
        _get(dynamodb.client)
    # THEN the retry is logged by operation and error, never with the keys or the signature
    assert "GetItem: retry 1" in caplog.text and "ThrottlingException" in caplog.text
    signature = dynamodb.headers[0]["authorization"].rsplit("=", 1)[1]
    for secret in ("secret-key-x", "token-x", signature):
        assert secret not in caplog.text
