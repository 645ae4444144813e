"""DynamoDB store failure paths over scripted HTTP answers (no sockets): the client's retries
(botocore's standard mode) run as they do against the service. The happy paths run against moto in
tests/integration/test_store_contract.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.aws.failures import AwsError
from core.errors import SessionConflict, SessionNotFound, StoreError
from core.model.messages import Message
from core.sessions.dynamodb import DynamoDBSessionStore
from tests.scripted_dynamodb import ScriptedDynamoDB

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
def scripted() -> Iterator[tuple[DynamoDBSessionStore, ScriptedDynamoDB]]:
    dynamodb = ScriptedDynamoDB(max_attempts=3)
    yield DynamoDBSessionStore("sessions", client=dynamodb.client, ttl_seconds=100), dynamodb
    assert dynamodb.pending == 0, "every scripted answer was asked for"


def query_page() -> dict[str, Any]:
    return {"Items": [META], "Count": 1, "ScannedCount": 1}


async def test_throttled_query_is_retried_then_succeeds(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    # GIVEN DynamoDB throttles twice, then answers
    dynamodb.error("ProvisionedThroughputExceededException")
    dynamodb.error("ThrottlingException")
    dynamodb.answer(query_page())
    # WHEN the session is loaded THEN the third try's answer is used
    session = await store.load(SID, now=NOW)
    assert (session.title, session.next_seq) == ("t", 0)
    assert dynamodb.calls == ["Query"] * 3


async def test_persistent_throttling_gives_a_clear_error_after_the_last_try(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    for _ in range(3):
        dynamodb.error("RequestLimitExceeded")
    started = time.monotonic()
    with pytest.raises(StoreError, match="session store is busy; try again") as caught:
        await store.load(SID, now=NOW)
    # the standard mode's throttling backoff: at most 1 s, then at most 2 s (full jitter)
    assert time.monotonic() - started < 3.5
    assert isinstance(caught.value.__cause__, AwsError)
    assert dynamodb.calls == ["Query"] * 3  # three tries, no fourth


async def test_transaction_cancelled_by_throttling_is_retried(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    dynamodb.cancelled("None", "ThrottlingError")
    dynamodb.answer({})
    assert await store.append(SID, [Message(role="user", content="hi")], seq=0, now=NOW) == 1
    assert dynamodb.calls == ["TransactWriteItems"] * 2


async def test_transaction_cancelled_by_throttling_every_time_is_busy(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    for _ in range(3):
        dynamodb.cancelled("ThrottlingError", "None")
    with pytest.raises(StoreError, match="session store is busy; try again"):
        await store.append(SID, [Message(role="user", content="hi")], seq=0, now=NOW)
    assert dynamodb.calls == ["TransactWriteItems"] * 3


async def test_taken_sequence_is_a_conflict_and_not_retried(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    dynamodb.cancelled("None", "None", "ConditionalCheckFailed")
    messages = [Message(role="user", content="q"), Message(role="assistant", content="a")]
    with pytest.raises(SessionConflict) as caught:
        await store.append(SID, messages, seq=3, now=NOW)
    assert isinstance(caught.value.__cause__, AwsError)
    assert dynamodb.calls == ["TransactWriteItems"]


async def test_append_to_missing_session_is_not_found(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    dynamodb.cancelled("ConditionalCheckFailed", "None")
    with pytest.raises(SessionNotFound):
        await store.append(SID, [Message(role="user", content="q")], seq=0, now=NOW)


async def test_other_failures_are_a_store_error_without_retry_or_details(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    dynamodb.error(
        "ResourceNotFoundException",
        "Requested resource not found: arn:aws:dynamodb:...:table/sessions",
    )
    with pytest.raises(StoreError) as caught:
        await store.load(SID, now=NOW)
    assert str(caught.value) == "session store failed"  # safe to show: no ARN, no table name
    assert dynamodb.calls == ["Query"]


async def test_unprocessed_deletes_are_sent_again(
    scripted: tuple[DynamoDBSessionStore, ScriptedDynamoDB],
) -> None:
    store, dynamodb = scripted
    message_key = {"pk": {"S": SID}, "sk": {"S": "m#0000000000"}}
    dynamodb.answer({})
    dynamodb.answer({"Items": [message_key], "Count": 1, "ScannedCount": 1})
    unprocessed = {"sessions": [{"DeleteRequest": {"Key": message_key}}]}
    dynamodb.answer({"UnprocessedItems": unprocessed})
    dynamodb.answer({"UnprocessedItems": {}})
    await store.delete(SID, now=NOW)
    assert dynamodb.calls == ["DeleteItem", "Query", "BatchWriteItem", "BatchWriteItem"]
    assert dynamodb.requests[-1] == {"RequestItems": unprocessed}
