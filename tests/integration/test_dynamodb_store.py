"""The DynamoDB items themselves, as the README's data model and template.yaml describe them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import boto3
import pytest

from core.model.messages import Message, ToolCall
from core.sessions.dynamodb import TTL_ATTRIBUTE, DynamoDBSessionStore
from tests.dynamodb_table import TEMPLATE, create_table_from_template, sessions_table_properties
from tests.store_fixtures import moto_endpoint, use_fake_aws

if not TEMPLATE.exists():
    pytest.skip(f"NOT TESTED: {TEMPLATE} is missing", allow_module_level=True)

SID = "b" * 22
TTL = 3600


@dataclass
class Table:
    name: str
    store: DynamoDBSessionStore
    operations: list[str]


@pytest.fixture
async def table(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Table]:
    use_fake_aws(monkeypatch, moto_endpoint())
    name = f"sessions-{uuid.uuid4().hex}"
    create_table_from_template(boto3.client("dynamodb"), name)
    client = boto3.client("dynamodb")
    operations: list[str] = []
    client.meta.events.register(
        "before-call.dynamodb.*",
        lambda model, **_: operations.append(model.name),
    )
    store = DynamoDBSessionStore(name, client=client, ttl_seconds=TTL)
    yield Table(name, store, operations)
    await store.aclose()


def scan(name: str) -> dict[str, dict[str, dict[str, str]]]:
    items = boto3.client("dynamodb").scan(TableName=name, ConsistentRead=True)["Items"]
    return {item["sk"]["S"]: item for item in items}  # type: ignore[misc]


def test_template_declares_the_keys_and_ttl_the_store_uses() -> None:
    properties = sessions_table_properties()
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {
        "AttributeName": TTL_ATTRIBUTE,
        "Enabled": True,
    }


async def test_items_follow_the_data_model(table: Table) -> None:
    # GIVEN a session with a tool exchange, written now (real time)
    now = time.time()
    call = ToolCall(id="call_1", name="calculator", arguments='{"expression": "1+1"}')
    await table.store.create(SID, title="1+1?", now=now)
    await table.store.append(
        SID,
        [
            Message(role="user", content="1+1?", created_at=now),
            Message(role="assistant", content="", created_at=now, tool_calls=(call,)),
            Message(
                role="tool", content="2", created_at=now, tool_call_id="call_1", name=call.name
            ),
        ],
        seq=0,
        now=now,
    )
    # THEN there is one meta item and one item per message, keyed by a zero-padded sequence
    items = scan(table.name)
    assert sorted(items) == ["m#0000000000", "m#0000000001", "m#0000000002", "meta"]
    meta = items["meta"]
    assert meta["pk"] == {"S": SID}
    assert meta["title"] == {"S": "1+1?"}
    assert meta["message_count"] == {"N": "3"}
    assert float(meta["updated_at"]["N"]) == now
    # and every item carries the TTL attribute as whole epoch seconds in the future
    for item in items.values():
        expiry = item[TTL_ATTRIBUTE]["N"]
        assert expiry.isdigit()
        assert now + TTL <= int(expiry) < now + TTL + 1
    first, second, third = (items[f"m#000000000{i}"] for i in range(3))
    assert first["role"] == {"S": "user"}
    assert first["status"] == {"S": "complete"}
    assert "tool_calls" not in first
    assert "tool_call_id" not in first
    assert json.loads(second["tool_calls"]["S"]) == [
        {"id": "call_1", "name": "calculator", "arguments": '{"expression": "1+1"}'}
    ]
    assert (third["tool_call_id"], third["name"]) == ({"S": "call_1"}, {"S": "calculator"})


async def test_lock_is_stored_on_the_meta_item_and_removed_on_unlock(table: Table) -> None:
    await table.store.create(SID, title="t", now=1000.0)
    await table.store.lock(SID, owner="turn-1", now=1000.0, lease_seconds=150)
    meta = scan(table.name)["meta"]
    assert (meta["lock_owner"], meta["lock_until"]) == ({"S": "turn-1"}, {"N": "1150.0"})
    await table.store.unlock(SID, owner="turn-1")
    assert "lock_owner" not in scan(table.name)["meta"]


async def test_the_store_only_reads_and_writes_items(table: Table) -> None:
    # GIVEN every operation of the store
    store = table.store
    await store.create(SID, title="t", now=1000.0)
    await store.lock(SID, owner="o", now=1000.0, lease_seconds=10)
    await store.append(SID, [Message(role="user", content="q")], seq=0, now=1000.0)
    await store.load(SID, now=1000.0, limit=5)
    await store.unlock(SID, owner="o")
    await store.delete(SID, now=1000.0)
    # THEN it never created a table or touched TTL: the template owns those
    assert set(table.operations) <= {
        "PutItem",
        "GetItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "TransactWriteItems",
        "BatchWriteItem",
    }
    assert "TransactWriteItems" in table.operations
