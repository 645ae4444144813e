"""On Lambda, the app's startup warms what every request needs; elsewhere it does nothing.

DynamoDB and Secrets Manager are a moto server on loopback.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from core.aws.dynamodb import DynamoDBTable
from core.aws.failures import AwsError
from core.errors import StoreError
from core.settings import Settings
from handlers.container import Services, build_services, warm_up
from tests.dynamodb_table import create_table_from_template
from tests.store_fixtures import moto_endpoint, use_fake_aws

SECRET_VALUE = "sk-test-" + "x" * 20
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def secret_arn(monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = moto_endpoint()
    use_fake_aws(monkeypatch, endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    client = boto3.client("secretsmanager", endpoint_url=endpoint)
    created = client.create_secret(Name=f"openai-{uuid.uuid4().hex}", SecretString=SECRET_VALUE)
    return str(created["ARN"])


def services_with(secret: str) -> Services:
    settings = Settings(
        session_store="dynamodb", sessions_table="sessions", openai_api_key_secret=secret
    )
    return build_services(settings)


async def test_off_lambda_warm_up_does_nothing(
    secret_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    services = services_with(secret_arn)
    await warm_up(services)
    assert services.table is not None and services.table._client is None


async def test_on_lambda_warm_up_builds_the_client_and_caches_the_secret(
    secret_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN Lambda's environment and a secret in Secrets Manager
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sse-chat-agent-ChatFunction")
    services = services_with(secret_arn)
    # WHEN the app starts
    await warm_up(services)
    # THEN the DynamoDB client exists and the key is cached: gone from Secrets Manager, the
    # first request still has it without a call.
    assert services.table is not None and services.table._client is not None
    boto3.client("secretsmanager").delete_secret(
        SecretId=secret_arn, ForceDeleteWithoutRecovery=True
    )
    assert await services.secrets.api_key() == SECRET_VALUE


async def test_a_failed_warm_up_is_logged_without_the_secret_and_does_not_stop_startup(
    secret_arn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sse-chat-agent-ChatFunction")
    missing = secret_arn.rsplit(":", 1)[0] + ":missing-AbCdEf"
    with caplog.at_level(logging.WARNING, logger="sse_chat_agent"):
        await warm_up(services_with(missing))
    assert "warm-up incomplete" in caplog.text
    assert SECRET_VALUE not in caplog.text


async def test_the_tables_own_client_reaches_dynamodb_configured_by_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN DynamoDB (moto) configured through the environment, as on Lambda
    endpoint = moto_endpoint()
    use_fake_aws(monkeypatch, endpoint)
    name = f"sessions-{uuid.uuid4().hex}"
    create_table_from_template(boto3.client("dynamodb"), name)
    table = DynamoDBTable(name)
    # WHEN the table builds its client
    client = table.client()
    # THEN it connects where the environment says, reads and writes the table, and a failed
    # condition comes back as DynamoDB's own error
    assert (client.endpoint, client.region) == (endpoint, "us-east-1")
    await table.call(
        lambda c: c.put_item(TableName=name, Item={"pk": {"S": "a"}, "sk": {"S": "b"}})
    )
    item = await table.call(
        lambda c: c.get_item(TableName=name, Key={"pk": {"S": "a"}, "sk": {"S": "b"}})
    )
    assert item["Item"]["pk"] == {"S": "a"}
    with pytest.raises(AwsError) as caught:
        client.put_item(
            TableName=name,
            Item={"pk": {"S": "a"}, "sk": {"S": "b"}},
            ConditionExpression="attribute_not_exists(pk)",
        )
    assert caught.value.code == "ConditionalCheckFailedException"
    await table.aclose()


async def test_an_unreachable_dynamodb_is_a_store_error_after_the_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_fake_aws(monkeypatch, "http://127.0.0.1:9")  # the discard port: nothing listens
    table = DynamoDBTable("sessions", max_attempts=2)
    with pytest.raises(StoreError, match="unavailable"):
        await table.call(lambda c: c.get_item(TableName="sessions", Key={}))


INIT_PROBE = """
import asyncio, logging, sys
from core.settings import Settings
from handlers.container import build_services, warm_up

logging.basicConfig(level=logging.WARNING)

async def main() -> None:
    settings = Settings(session_store="dynamodb", openai_api_key_secret=sys.argv[1])
    services = build_services(settings)
    await warm_up(services)
    key = await services.secrets.api_key()
    heavy = {"boto3", "botocore.session", "botocore.client", "botocore.auth", "urllib3"}
    sdk = sorted(set(sys.modules) & heavy)
    print(key == sys.argv[2], sdk)
    await services.aclose()

asyncio.run(main())
"""


def test_lambda_init_reaches_dynamodb_and_secrets_manager_without_the_aws_sdk(
    secret_arn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN Lambda's environment (the credentials, region and endpoints it sets), a table and
    the OpenAI key in a secret; WHEN a fresh process runs the app's init; THEN DynamoDB and
    the secret were reached (no warm-up warning) and neither boto3 nor botocore's session,
    client or signer nor urllib3 was imported: init pays none of their ~100 ms (README
    Performance). Powertools imports the `botocore` package itself (its `__init__`, <1 ms)."""
    table = f"sessions-{uuid.uuid4().hex}"
    create_table_from_template(boto3.client("dynamodb"), table)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sse-chat-agent-ChatFunction")
    monkeypatch.setenv("SESSIONS_TABLE", table)
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    probe = subprocess.run(
        [sys.executable, "-c", INIT_PROBE, secret_arn, SECRET_VALUE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "True []"
    assert "warm-up incomplete" not in probe.stderr, probe.stderr
    assert SECRET_VALUE not in probe.stdout + probe.stderr
