"""DynamoDB store failure paths, with botocore's Stubber in place of the network (no sockets).

The happy paths run against moto in tests/integration/test_store_contract.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from core.dynamodb_store import DynamoDBSessionStore
from core.errors import SessionConflict, SessionNotFound, StoreError
from core.messages import Message

SID = "s" * 22
NOW = 1_700_000_000.0
META = {
    "pk": {"S": SID},
    "sk": {"S": "meta"},
    "title": {"S": "t"},
    "created_at": {"N": "1700000000.0"},
    "updated_at": {"N": "1700000000.0"},
    "message_count": {"N": "0"},
    "expires_at": {"N": "1700000100"},
}


@pytest.fixture
def stubbed() -> Iterator[tuple[DynamoDBSessionStore, Stubber]]:
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers every call
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield DynamoDBSessionStore("sessions", client=client, ttl_seconds=100), stubber
        stubber.assert_no_pending_responses()


def query_page() -> dict[str, Any]:
    return {"Items": [META], "Count": 1, "ScannedCount": 1}


def cancelled(*codes: str) -> dict[str, Any]:
    return {"CancellationReasons": [{"Code": code} for code in codes]}


async def test_throttled_query_is_retried_then_succeeds(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    # GIVEN DynamoDB throttles twice, then answers
    stubber.add_client_error("query", "ProvisionedThroughputExceededException")
    stubber.add_client_error("query", "ThrottlingException")
    stubber.add_response("query", query_page())
    # WHEN the session is loaded THEN the third try's answer is used
    session = await store.load(SID, now=NOW)
    assert (session.title, session.next_seq) == ("t", 0)


async def test_persistent_throttling_gives_a_clear_error_within_two_seconds(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    for _ in range(4):
        stubber.add_client_error("query", "RequestLimitExceeded")
    started = time.monotonic()
    with pytest.raises(StoreError, match="session store is busy; try again") as caught:
        await store.load(SID, now=NOW)
    assert time.monotonic() - started < 2.0
    assert isinstance(caught.value.__cause__, ClientError)
    # (the fixture checks all four tries were made, and no fifth)


async def test_transaction_cancelled_by_throttling_is_retried(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "transact_write_items",
        "TransactionCanceledException",
        modeled_fields=cancelled("None", "ThrottlingError"),
    )
    stubber.add_response("transact_write_items", {})
    assert await store.append(SID, [Message(role="user", content="hi")], seq=0, now=NOW) == 1


async def test_taken_sequence_is_a_conflict_and_not_retried(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "transact_write_items",
        "TransactionCanceledException",
        modeled_fields=cancelled("None", "None", "ConditionalCheckFailed"),
    )
    messages = [Message(role="user", content="q"), Message(role="assistant", content="a")]
    with pytest.raises(SessionConflict) as caught:
        await store.append(SID, messages, seq=3, now=NOW)
    assert isinstance(caught.value.__cause__, ClientError)


async def test_append_to_missing_session_is_not_found(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "transact_write_items",
        "TransactionCanceledException",
        modeled_fields=cancelled("ConditionalCheckFailed", "None"),
    )
    with pytest.raises(SessionNotFound):
        await store.append(SID, [Message(role="user", content="q")], seq=0, now=NOW)


async def test_other_failures_are_a_store_error_without_retry_or_details(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    stubber.add_client_error(
        "query",
        "ResourceNotFoundException",
        service_message="Requested resource not found: arn:aws:dynamodb:...:table/sessions",
    )
    with pytest.raises(StoreError) as caught:
        await store.load(SID, now=NOW)
    assert str(caught.value) == "session store failed"  # safe to show: no ARN, no table name


async def test_unprocessed_deletes_are_sent_again(
    stubbed: tuple[DynamoDBSessionStore, Stubber],
) -> None:
    store, stubber = stubbed
    message_key = {"pk": {"S": SID}, "sk": {"S": "m#0000000000"}}
    stubber.add_response("delete_item", {})
    stubber.add_response("query", {"Items": [message_key], "Count": 1, "ScannedCount": 1})
    unprocessed = {"sessions": [{"DeleteRequest": {"Key": message_key}}]}
    stubber.add_response("batch_write_item", {"UnprocessedItems": unprocessed})
    stubber.add_response(
        "batch_write_item",
        {"UnprocessedItems": {}},
        expected_params={"RequestItems": unprocessed},
    )
    await store.delete(SID, now=NOW)
