"""Limits, access control, deadlines and page headers: what the client sees, what is stored."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat


def test_rate_limit_answers_429_with_retry_after_before_any_model_call(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, rate_limit_per_minute=2)).url
    window = int(time.time() // 60)
    for _ in range(2):
        assert stream_chat(http, f"{url}/chat", params={"prompt": "hi"}).status == 200
    refused = http.get(f"{url}/chat", params={"prompt": "hi"})
    if int(time.time() // 60) != window:
        pytest.skip("the requests straddled a minute boundary; the window restarted")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "rate limit" in refused.json()["error"]
    assert len(simulator.log) == 2
    assert http.get(f"{url}/healthz").status_code == 200  # only turns are limited


def test_daily_token_quota_stops_a_client_after_it_is_spent(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, daily_token_quota=50)).url
    simulator.sim.script({"chunks": ["x"], "usage": {"prompt_tokens": 40, "completion_tokens": 20}})
    assert stream_chat(http, f"{url}/chat", params={"prompt": "hi"}).last["lifecycle"] == "done"
    refused = http.get(f"{url}/chat", params={"prompt": "again"})
    assert refused.status_code == 429
    assert "daily token quota" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) <= 24 * 3600


def test_access_key_guards_chat_and_sessions(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    url = live_app(settings_for(simulator, access_key="open-sesame")).url
    for method, path in [("GET", "/chat?prompt=hi"), ("POST", "/chat"), ("GET", "/sessions/x")]:
        response = http.request(method, f"{url}{path}", json={"prompt": "hi"})
        assert response.status_code == 401, path
        assert "access key" in response.json()["error"]
    wrong = http.get(f"{url}/chat", params={"prompt": "hi", "key": "open-sesamE"})
    assert wrong.status_code == 401
    by_query = stream_chat(http, f"{url}/chat", params={"prompt": "hi", "key": "open-sesame"})
    assert by_query.last["lifecycle"] == "done"
    by_header = http.get(
        f"{url}/sessions/{by_query.session}", headers={"Authorization": "Bearer open-sesame"}
    )
    assert by_header.status_code == 200
    assert http.get(f"{url}/healthz").status_code == 200
    assert http.get(f"{url}/").status_code == 200
    assert len(simulator.log) == 1


def test_page_security_headers(app_url: str, http: httpx.Client) -> None:
    page = http.get(f"{app_url}/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    api = http.get(f"{app_url}/healthz")
    assert api.headers["x-content-type-options"] == "nosniff"


def test_lambda_deadline_from_the_web_adapter_context_ends_the_turn_in_time(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN an app on Lambda, an invocation with 4.5 s left (the app keeps a 3 s margin) and
    # a 10 s reply
    app_url = live_app(settings_for(simulator, aws_lambda_function_name="sse-chat-agent-test")).url
    simulator.sim.script({"chunks": [f"{i} " for i in range(100)], "delay_ms": 100})
    context = {"deadline": int((time.time() + 4.5) * 1000), "request_id": "r-1"}
    start = time.monotonic()
    got = stream_chat(
        http,
        f"{app_url}/chat",
        params={"prompt": "long"},
        headers={"x-amzn-lambda-context": json.dumps(context)},
    )
    # THEN it ends with the time-limit error well before Lambda would kill it, reply kept
    assert got.last == {"error": "time limit reached"}
    assert time.monotonic() - start < 3.5
    stored = http.get(f"{app_url}/sessions/{got.session}").json()["messages"]
    assert stored[-1]["content"] == got.text and stored[-1]["status"] == "interrupted"


def test_a_retried_duplicate_post_is_refused_while_running_and_stored_once_each_after(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script({"chunks": ["first"]})
    session = stream_chat(http, f"{app_url}/chat", params={"prompt": "start"}).session
    simulator.sim.script({"chunks": ["slow", " reply"], "delay_ms": 400}, {"chunks": ["again"]})
    body = {"prompt": "pay the invoice", "session": session}
    results: list[int] = []

    def original() -> None:
        with httpx.Client(timeout=30) as client:
            results.append(stream_chat(client, f"{app_url}/chat", method="POST", json=body).status)

    thread = threading.Thread(target=original)
    thread.start()
    time.sleep(0.3)
    # WHEN the client retries the same POST while the first is still streaming
    duplicate = http.post(f"{app_url}/chat", json=body)
    thread.join()
    # THEN the retry is refused with 409 and the conversation holds the prompt once
    assert duplicate.status_code == 409 and "in progress" in duplicate.json()["error"]
    assert results == [200]
    messages = http.get(f"{app_url}/sessions/{session}").json()["messages"]
    assert [m["content"] for m in messages] == ["start", "first", "pay the invoice", "slow reply"]
    # AND a retry after it finished is a new turn, stored as such (nothing lost)
    assert stream_chat(http, f"{app_url}/chat", method="POST", json=body).status == 200
    messages = http.get(f"{app_url}/sessions/{session}").json()["messages"]
    assert [m["content"] for m in messages][-2:] == ["pay the invoice", "again"]


def test_access_key_from_secrets_manager(
    simulator: SimulatorServer,
    live_app: AppFactory,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ACCESS_KEY_SECRET (Lambda): the key is read through Powertools Parameters (moto here)."""
    import boto3

    from tests.store_fixtures import moto_endpoint, use_fake_aws

    use_fake_aws(monkeypatch, moto_endpoint())
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint())
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"access-{time.time_ns()}", SecretString="from-the-vault\n"
    )["ARN"]
    url = live_app(settings_for(simulator, access_key_secret=arn)).url
    assert http.get(f"{url}/chat", params={"prompt": "hi"}).status_code == 401
    got = stream_chat(http, f"{url}/chat", params={"prompt": "hi", "key": "from-the-vault"})
    assert got.last["lifecycle"] == "done"
