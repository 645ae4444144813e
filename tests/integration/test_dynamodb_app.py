"""The app with SESSION_STORE=dynamodb against moto's server via AWS_ENDPOINT_URL_DYNAMODB."""

from __future__ import annotations

import time

import boto3
import httpx
import pytest

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat
from tests.store_fixtures import fresh_table


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh table shaped by template.yaml's SessionsTable, reached through the env var."""
    return fresh_table(monkeypatch)


def test_two_turns_on_dynamodb(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, table: str
) -> None:
    url = live_app(settings_for(simulator, session_store="dynamodb", sessions_table=table)).url
    simulator.sim.script({"chunks": ["Nice to", " meet you"]}, {"chunks": ["Ada."]})
    first = stream_chat(http, f"{url}/chat", params={"prompt": "I am Ada"})
    second = stream_chat(
        http, f"{url}/chat", params={"prompt": "My name?", "session": first.session}
    )
    assert first.last["lifecycle"] == "done" and second.last["lifecycle"] == "done"
    replayed = simulator.log[1]["body"]["messages"]
    assert [m["content"] for m in replayed[1:]] == ["I am Ada", "Nice to meet you", "My name?"]
    messages = http.get(f"{url}/sessions/{first.session}").json()["messages"]
    assert [m["content"] for m in messages] == ["I am Ada", "Nice to meet you", "My name?", "Ada."]
    # Items carry the template's TTL attribute, in the future, as epoch seconds.
    items = boto3.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": first.session}},
    )["Items"]
    assert len(items) == 5  # meta + 4 messages
    assert all(int(item["expires_at"]["N"]) > time.time() for item in items)


def test_rate_limit_counters_are_shared_in_dynamodb(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client, table: str
) -> None:
    settings = settings_for(
        simulator, session_store="dynamodb", sessions_table=table, rate_limit_per_minute=2
    )
    # GIVEN two app instances (two Lambda instances) on one table
    urls = [live_app(settings).url, live_app(settings).url]
    window = int(time.time() // 60)
    statuses = [
        http.get(f"{urls[i % 2]}/chat", params={"prompt": "hi"}).status_code for i in range(3)
    ]
    if int(time.time() // 60) != window:
        pytest.skip("the requests straddled a minute boundary; the window restarted")
    # THEN the third request is refused whichever instance it reached
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 429
    assert len(simulator.log) == 2
