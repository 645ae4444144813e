"""Bad input gets its documented 4xx and `{"error"}` JSON before any upstream request."""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat

UNKNOWN_SESSION = "A" * 22

CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("GET", "/chat", {}, 400, "prompt is required"),
    ("GET", "/chat", {"params": {"prompt": ""}}, 400, "prompt is required"),
    ("GET", "/chat", {"params": {"prompt": "   \n"}}, 400, "prompt is required"),
    ("POST", "/chat", {"json": {}}, 400, "prompt is required"),
    ("POST", "/chat", {"json": {"prompt": 42}}, 400, "prompt"),
    ("POST", "/chat", {"json": {"prompt": ["a"]}}, 400, "prompt"),
    ("POST", "/chat", {"json": ["not", "an", "object"]}, 400, ""),
    (
        "POST",
        "/chat",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    ("GET", "/chat", {"params": {"prompt": "x" * 101}}, 413, "longer than 100"),
    ("POST", "/chat", {"json": {"prompt": "x" * 101}}, 413, "longer than 100"),
    ("GET", "/chat", {"params": {"prompt": "hi", "session": "../etc"}}, 400, "malformed session"),
    ("GET", "/chat", {"params": {"prompt": "hi", "session": "a b<c>"}}, 400, "malformed session"),
    ("GET", "/chat", {"params": {"prompt": "hi", "session": "A" * 21}}, 400, "malformed session"),
    ("POST", "/chat", {"json": {"prompt": "hi", "session": "A" * 23}}, 400, "malformed session"),
    ("GET", "/chat", {"params": {"prompt": "hi", "session": UNKNOWN_SESSION}}, 404, "unknown"),
    ("POST", "/chat", {"json": {"prompt": "hi", "session": UNKNOWN_SESSION}}, 404, "unknown"),
    ("GET", "/chat", {"params": {"prompt": "hi", "role": "nope"}}, 400, "unknown role"),
    ("GET", f"/sessions/{UNKNOWN_SESSION}", {}, 404, "unknown"),
    ("GET", "/sessions/bad%20id", {}, 400, "malformed session"),
    ("DELETE", f"/sessions/{UNKNOWN_SESSION}", {}, 404, "unknown"),
    ("GET", "/no-such-page", {}, 404, ""),
]


@pytest.fixture
def small_app(simulator: SimulatorServer, live_app: AppFactory) -> str:
    return live_app(settings_for(simulator, max_prompt_chars=100)).url


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), CASES)
def test_bad_input_is_refused_before_any_model_call(
    simulator: SimulatorServer,
    small_app: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = httpx.request(method, f"{small_app}{path}", timeout=10, **kwargs)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert message in body["error"]
    assert "Traceback" not in response.text
    assert simulator.log == []


def test_prompt_of_exactly_the_limit_is_accepted(
    simulator: SimulatorServer, small_app: str
) -> None:
    with httpx.Client(timeout=10) as http:
        got = stream_chat(http, f"{small_app}/chat", params={"prompt": "é" * 100})
    assert got.status == 200
    assert simulator.log[0]["body"]["messages"][-1]["content"] == "é" * 100


def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """GET over a plain socket: httpx refuses URLs over 64 KB, browsers and curl do not."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_long_get_prompt_gets_json_413_not_a_server_url_error(
    simulator: SimulatorServer, app_url: str
) -> None:
    # GIVEN the default limit (16,000) and a prompt of CJK characters, 9 URL bytes each
    prompt = "字" * 16_001
    status, body = raw_get(app_url, "/chat?prompt=" + quote(prompt))
    assert status == 413
    assert json.loads(body) == {"error": "prompt is longer than 16000 characters"}
    # AND exactly the limit (a 144 KB URL) goes through to the model
    status, body = raw_get(app_url, "/chat?prompt=" + quote(prompt[:-1]))
    assert status == 200
    assert b'"lifecycle": "done"' in body
    assert simulator.log[-1]["body"]["messages"][-1]["content"] == prompt[:-1]
