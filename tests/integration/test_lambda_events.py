"""Every events/*.json through the buffered Lambda handler (Mangum), as `sam local invoke` would.

The events are Function URL payloads (version 2.0). The tests read the same files that
`sam local invoke ChatFunction -e events/<name>.json` reads, so the samples cannot rot.

Two events name a session: `chat-continue.json` and `session-get.json` carry the well-formed
placeholder id `sessionIdFromAChatTurn`. Sent as they are, no such session exists: 404. The
tests first run a turn, then put its session id in place of the placeholder (everywhere in the
event: rawPath, rawQueryString, queryStringParameters, requestContext.http.path).
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from mangum import Mangum

from core.settings import DEFAULT_OPENAI_BASE_URL, Settings
from handlers.app import create_app

EVENTS = Path(__file__).resolve().parents[2] / "events"
PLACEHOLDER = "sessionIdFromAChatTurn"
ORIGIN = "https://chat.example.com"

# What each sample gets from the app as deployed (CORS_ALLOW_ORIGINS empty), sent unchanged.
EXPECTED_STATUS = {
    "chat-get": 200,
    "chat-post": 200,
    "chat-post-base64": 200,
    "chat-continue": 404,  # the placeholder session does not exist
    "session-get": 404,  # likewise
    "chat-missing-prompt": 400,
    # On Lambda the Function URL answers preflights itself; the app has no OPTIONS route.
    "preflight-options": 405,
}
CHAT_EVENTS = ("chat-get", "chat-post", "chat-post-base64")


def event_names() -> list[str]:
    return sorted(path.stem for path in EVENTS.glob("*.json"))


def load_event(name: str, *, session: str | None = None) -> dict[str, Any]:
    text = (EVENTS / f"{name}.json").read_text(encoding="utf-8")
    if session is not None:
        assert PLACEHOLDER in text
        text = text.replace(PLACEHOLDER, session)
    event: dict[str, Any] = json.loads(text)
    return event


def lambda_settings(**overrides: Any) -> Settings:
    """Settings as on Lambda (no CORS in the app), the simulated model, in-memory sessions."""
    values: dict[str, Any] = {
        "openai_api_key": None,
        "openai_api_key_secret": None,
        "openai_base_url": DEFAULT_OPENAI_BASE_URL,
        "session_store": "memory",
        "cors_allow_origins": "",
        "simulator_token_delay_ms": 0,
        "rate_limit_per_minute": 0,
    }
    return Settings(**(values | overrides))


class LambdaContext:
    """The attributes of a Lambda context object that Mangum reads."""

    function_name = "sse-chat-agent-ChatFunction"
    aws_request_id = "c1a6f1d2-0b1e-4c55-9d1e-00000000ffff"

    def get_remaining_time_in_millis(self) -> int:
        return 150_000


@pytest.fixture
def invoke() -> Iterator[Any]:
    """Invoke one Mangum handler several times, as a warm Lambda container does.

    lifespan="off": Mangum runs the ASGI lifespan around *every* invocation, and the app's
    shutdown closes its HTTP client and store, which breaks the next warm invocation (see
    test_template_handler_path_serves_warm_invocations).
    """
    handler = Mangum(create_app(lambda_settings()), lifespan="off")

    def call(event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = handler(event, LambdaContext())  # type: ignore[arg-type]
        return response

    yield call


def body_text(response: dict[str, Any]) -> str:
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        return base64.b64decode(body).decode("utf-8")
    return str(body)


def headers(response: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in (response.get("headers") or {}).items()}


def allow_origin_values(response: dict[str, Any]) -> list[str]:
    """Every Access-Control-Allow-Origin value, however the response carries repeats."""
    values: list[str] = []
    for name, value in (response.get("headers") or {}).items():
        if name.lower() == "access-control-allow-origin":
            values.extend(v.strip() for v in str(value).split(","))
    for name, many in (response.get("multiValueHeaders") or {}).items():
        if name.lower() == "access-control-allow-origin":
            values.extend(many)
    return values


def sse_events(response: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each SSE message in a buffered body; comments (pings) are skipped."""
    messages = []
    for block in body_text(response).replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "data" in fields:
            messages.append((int(fields["id"]), json.loads(fields["data"])))
    return messages


def assert_complete_turn(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["statusCode"] == 200, body_text(response)
    assert headers(response)["content-type"].startswith("text/event-stream")
    messages = sse_events(response)
    ids = [i for i, _ in messages]
    assert ids == sorted(set(ids)), "ids must strictly increase"
    data = [d for _, d in messages]
    assert data[0]["lifecycle"] == "started"
    assert data[-1]["lifecycle"] == "done"
    assert any("token" in d for d in data)
    return data


# --- the samples themselves -----------------------------------------------------------------


def test_every_sample_has_a_documented_status() -> None:
    assert set(event_names()) == set(EXPECTED_STATUS)


@pytest.mark.parametrize("name", event_names())
def test_sample_is_a_consistent_function_url_event(name: str) -> None:
    event = load_event(name)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    http = event["requestContext"]["http"]
    assert http["path"] == event["rawPath"]
    assert http["method"] in {"GET", "POST", "DELETE", "OPTIONS"}
    assert event["headers"]["host"] == event["requestContext"]["domainName"]
    assert all(key == key.lower() for key in event["headers"]), "Function URLs lower-case headers"
    query = {k: v[0] for k, v in parse_qs(event["rawQueryString"]).items()}
    assert query == event.get("queryStringParameters", {})
    if "body" in event:
        raw = event["body"]
        body = base64.b64decode(raw) if event["isBase64Encoded"] else raw.encode()
        assert int(event["headers"]["content-length"]) == len(body)
        json.loads(body)


# --- through the buffered handler ----------------------------------------------------------


@pytest.mark.parametrize("name", event_names())
def test_sample_gets_its_documented_status_and_no_cors_header(invoke: Any, name: str) -> None:
    response = invoke(load_event(name))
    assert response["statusCode"] == EXPECTED_STATUS[name], body_text(response)
    # CORS belongs to the Function URL on Lambda: the app must add none.
    assert allow_origin_values(response) == []
    if EXPECTED_STATUS[name] >= 400:
        assert headers(response)["content-type"].startswith("application/json")
        assert set(json.loads(body_text(response))) == {"error"}


@pytest.mark.parametrize("name", CHAT_EVENTS)
def test_chat_sample_returns_a_whole_sse_turn(invoke: Any, name: str) -> None:
    assert_complete_turn(invoke(load_event(name)))


def test_base64_body_reaches_the_session_byte_exact(invoke: Any) -> None:
    # GIVEN a POST whose body the Function URL delivered base64-encoded
    event = load_event("chat-post-base64")
    prompt = json.loads(base64.b64decode(event["body"]))["prompt"]
    # WHEN the turn runs
    session = assert_complete_turn(invoke(event))[0]["session"]
    # THEN the stored user message is the decoded prompt, non-ASCII included
    stored = json.loads(body_text(invoke(load_event("session-get", session=session))))
    assert stored["messages"][0]["role"] == "user"
    assert stored["messages"][0]["content"] == prompt


def test_continue_and_get_a_session_created_by_a_turn(invoke: Any) -> None:
    # GIVEN a session made by a first turn (the handler stays warm between invocations)
    first = assert_complete_turn(invoke(load_event("chat-get")))
    session = first[0]["session"]
    # WHEN the continue sample is sent with that session id
    second = assert_complete_turn(invoke(load_event("chat-continue", session=session)))
    # THEN the turn continues the same session, and the session holds both turns in order
    assert second[0]["session"] == session
    response = invoke(load_event("session-get", session=session))
    assert response["statusCode"] == 200
    stored = json.loads(body_text(response))
    assert stored["id"] == session
    user_prompts = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    asked = load_event("chat-continue")["queryStringParameters"]["prompt"]
    assert user_prompts == [load_event("chat-get")["queryStringParameters"]["prompt"], asked]
    assert stored["messages"][-1]["role"] == "assistant"


def test_missing_prompt_is_refused_with_a_clear_message(invoke: Any) -> None:
    response = invoke(load_event("chat-missing-prompt"))
    assert response["statusCode"] == 400
    assert "prompt" in json.loads(body_text(response))["error"].lower()


def test_local_cors_answers_preflight_with_exactly_one_allow_origin() -> None:
    """Off Lambda, CORS_ALLOW_ORIGINS turns app CORS on: one header, never two."""
    app = create_app(lambda_settings(cors_allow_origins=ORIGIN))
    handler = Mangum(app, lifespan="off")
    preflight = handler(load_event("preflight-options"), LambdaContext())  # type: ignore[arg-type]
    assert preflight["statusCode"] in (200, 204)
    assert allow_origin_values(preflight) == [ORIGIN]
    chat = handler(load_event("chat-post"), LambdaContext())  # type: ignore[arg-type]
    assert_complete_turn(chat)
    assert allow_origin_values(chat) == [ORIGIN]


def test_template_handler_path_serves_warm_invocations(monkeypatch: pytest.MonkeyPatch) -> None:
    """`handlers.buffered.handler` (the template's non-streaming Handler) serves warm
    invocations; importing it builds it, as Lambda's init does."""
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_SECRET",
        "OPENAI_BASE_URL",
        "CORS_ALLOW_ORIGINS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SESSION_STORE", "memory")
    monkeypatch.setenv("SIMULATOR_TOKEN_DELAY_MS", "0")
    monkeypatch.delitem(sys.modules, "handlers.buffered", raising=False)
    handler = importlib.import_module("handlers.buffered").handler
    monkeypatch.delitem(sys.modules, "handlers.buffered")  # the next import builds its own
    assert isinstance(handler, Mangum)
    for _ in range(2):  # warm invocations reuse the module-level handler
        response = handler(load_event("chat-get"), LambdaContext())
        data = assert_complete_turn(response)
        # No key: the in-process simulated model answers, and says so.
        assert data[0]["model"] == "simulator" and data[0]["simulated"] is True
        assert allow_origin_values(response) == []
