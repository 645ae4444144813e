"""CORS_ALLOW_ORIGINS (local only): exact origins, exactly one header, nothing for strangers."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import stream_chat

ALLOWED = "https://chat.example.com"


@pytest.fixture
def cors_url(simulator: SimulatorServer, live_app: AppFactory) -> str:
    settings = settings_for(simulator, cors_allow_origins=f"{ALLOWED}, http://localhost:5173")
    return live_app(settings).url


def test_allowed_origin_gets_exactly_one_header_and_its_preflight_passes(
    cors_url: str, http: httpx.Client
) -> None:
    preflight = http.options(
        f"{cors_url}/chat",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers.get_list("access-control-allow-origin") == [ALLOWED]
    got = stream_chat(
        http, f"{cors_url}/chat", params={"prompt": "hi"}, headers={"Origin": ALLOWED}
    )
    assert got.headers.get_list("access-control-allow-origin") == [ALLOWED]


def test_foreign_origin_gets_no_cors_header(cors_url: str, http: httpx.Client) -> None:
    evil = "https://evil.example"
    preflight = http.options(
        f"{cors_url}/chat", headers={"Origin": evil, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 400 and "error" in preflight.json()
    response = http.get(f"{cors_url}/healthz", headers={"Origin": evil})
    assert "access-control-allow-origin" not in response.headers


def test_no_cors_setting_means_no_cors_headers_at_all(app_url: str, http: httpx.Client) -> None:
    response = http.get(f"{app_url}/healthz", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers
