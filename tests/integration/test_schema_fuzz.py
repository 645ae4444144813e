"""Schemathesis against the live app's own OpenAPI schema: no 5xx, every refusal JSON `{"error"}`.

The app runs on a loopback port (uvicorn's own limits and parsing are part of what is fuzzed)
and talks to the simulator with no token delay, so each generated `/chat` turn streams to its
end in milliseconds and the whole SSE body is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from core.sessions.ids import new_session_id
from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat

REQUEST_TIMEOUT_SECONDS = 10
MAX_EXAMPLES = 50
MAX_STREAM_EVENTS = 10_000  # schemathesis stops reading a stream after a few events by default
PROMPT_LIMIT = 40  # small, so generated prompts cross it and 413 is fuzzed too

# Listed here rather than collected by `schemathesis.pytest.from_fixture`, which breaks on
# pytest 9 (it reads a private node attribute): each operation is one test driving hypothesis.
OPERATIONS = [
    ("GET", "/chat"),
    ("POST", "/chat"),
    ("GET", "/sessions/{session_id}"),
    ("DELETE", "/sessions/{session_id}"),
    ("POST", "/sessions/{session_id}/stop"),
    ("GET", "/sessions/{session_id}/stream"),
    ("GET", "/healthz"),
]
# The statuses a run must have produced: the generator reached past input checks.
EXPECTED_STATUSES = {
    ("GET", "/chat"): {200, 400, 404, 413},
    ("POST", "/chat"): {200, 400, 404, 413},
    ("GET", "/sessions/{session_id}"): {200, 400, 404},
    ("DELETE", "/sessions/{session_id}"): {204, 400, 404},
    ("POST", "/sessions/{session_id}/stop"): {204, 400, 404},
    ("GET", "/sessions/{session_id}/stream"): {200, 400, 404},
    ("GET", "/healthz"): {200},
}


@dataclass
class Target:
    schema: Any
    known_session: str


@pytest.fixture
def target(simulator: SimulatorServer, live_app: AppFactory) -> Target:
    url = live_app(settings_for(simulator, max_prompt_chars=PROMPT_LIMIT)).url
    with httpx.Client(timeout=10) as client:
        known = stream_chat(client, f"{url}/chat", params={"prompt": "seed"}).session
    config = SchemathesisConfig.from_dict({"max-stream-events": MAX_STREAM_EVENTS})
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    return Target(schema=schema, known_session=known)


@schemathesis.check
def refusals_are_json_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every non-2xx answer is `application/json` with a non-empty string `error`."""
    assert "Traceback" not in response.text, "a traceback leaked into a response body"
    if 200 <= response.status_code < 300:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"refusal as {content_type!r}"
    body = json.loads(response.text)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    assert body["error"], "an empty error message"
    return True


@schemathesis.check
def streams_are_whole_json_events(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 200 SSE body: each event one JSON `data:` line with an id; `done` or `{"error"}` last."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code != 200 or not content_type.startswith("text/event-stream"):
        return None
    events: list[dict[str, Any]] = []
    blocks = response.text.split("\n\n")
    assert blocks[0].startswith("retry: "), "the stream opens with its reconnect delay"
    for block in blocks[1:]:
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        data = [line for line in lines if line.startswith("data: ")]
        ids = [line for line in lines if line.startswith("id: ")]
        assert len(data) == 1 and len(ids) == 1 and len(lines) == 2, f"bad block {block!r}"
        events.append(json.loads(data[0].removeprefix("data: ")))
    assert events, "an empty stream"
    assert events[0].get("lifecycle") == "started", events[0]
    last = events[-1]
    assert last.get("lifecycle") == "done" or set(last) == {"error"}, last
    return True


def steer(case: Any, session: str | None, prompt: str | None) -> Any:
    """Point a generated case at a real or a well-formed unknown session and at a prompt at
    or just over the limit (None: leave the generated value).

    Random strings are almost never well-formed ids nor exactly that long, so without this
    mostly the 400 paths would be fuzzed.
    """
    if "{session_id}" in case.path:
        if session is not None:
            case.path_parameters = {**(case.path_parameters or {}), "session_id": session}
        return case
    fixed = {k: v for k, v in (("session", session), ("prompt", prompt)) if v is not None}
    if case.method.upper() == "GET":
        case.query = _steered(case.query or {}, fixed)
    elif isinstance(case.body, dict):
        case.body = _steered(case.body, fixed)
    return case


def _steered(values: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    # A generated role is checked before the session: drop it so the session is reached.
    kept = {k: v for k, v in values.items() if not (fixed and k == "role")}
    return kept | fixed


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_api_never_fails_on_any_input(target: Target, method: str, path: str) -> None:
    """GIVEN requests the schema allows and requests it breaks (schemathesis generates both),
    some aimed at a real session and at a well-formed unknown one,
    THEN no 5xx, no traceback, every refusal `{"error": "..."}` as JSON, and every stream
    whole JSON events ending in `done` or `{"error"}`."""
    operation = target.schema[path][method]
    generated = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    sessions = st.sampled_from([None, target.known_session, new_session_id()])
    prompts = st.sampled_from([None, "é" * PROMPT_LIMIT, "x" * (PROMPT_LIMIT + 1)])
    statuses: set[int] = set()

    @given(case=st.builds(steer, generated, sessions, prompts))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every CI run, so the status check below is stable
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def fuzz(case: Any) -> None:
        response = case.call(timeout=REQUEST_TIMEOUT_SECONDS)
        statuses.add(response.status_code)
        case.validate_response(
            response,
            checks=[not_a_server_error, refusals_are_json_errors, streams_are_whole_json_events],
        )

    fuzz()
    assert statuses >= EXPECTED_STATUSES[method, path], sorted(statuses)


def test_the_schema_lists_exactly_the_fuzzed_operations(target: Target) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in target.schema.get_all_operations()}
    assert listed == set(OPERATIONS)
