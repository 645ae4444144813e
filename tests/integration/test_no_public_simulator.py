"""With no API key the served app has no simulator to reach: nothing to read, script or break.

The attack it closes: `/simulator/_sim/log` returned other users' prompts,
`/simulator/_sim/script` injected replies, `/simulator/v1/chat/completions` answered anyone.
Now the in-process simulated model answers and none of those paths exists.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount

from core.settings import DEFAULT_OPENAI_BASE_URL, Settings
from handlers.app import create_app
from handlers.serve import uvicorn_options
from tests.conftest import LiveServer, SimulatorServer, settings_for
from tests.sse_client import stream_chat

ROOT = Path(__file__).resolve().parents[2]
DELAY_MS = 20


def keyless_settings() -> Settings:
    return Settings(
        openai_api_key=None,
        openai_api_key_secret=None,
        openai_base_url=DEFAULT_OPENAI_BASE_URL,
        access_key=None,
        access_key_secret=None,
        session_store="memory",
        rate_limit_per_minute=0,
        simulator_token_delay_ms=DELAY_MS,
    )


@pytest.fixture
def keyless_url() -> Iterator[str]:
    settings = keyless_settings()
    assert settings.use_simulator
    app = create_app(settings)
    with LiveServer(app, **uvicorn_options(settings) | {"log_level": "warning"}) as server:
        yield server.url


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/simulator/_sim/log"),
        ("POST", "/simulator/_sim/script"),
        ("POST", "/simulator/_sim/reset"),
        ("POST", "/simulator/v1/chat/completions"),
        ("GET", "/simulator/v1/models"),
        ("GET", "/_sim/log"),
        ("POST", "/_sim/script"),
        ("POST", "/v1/chat/completions"),
    ],
)
def test_no_simulator_route_answers_without_a_key(keyless_url: str, method: str, path: str) -> None:
    """GIVEN the app served with no API key and no access key
    WHEN an anonymous client tries the simulator's old control and completion paths
    THEN each is a JSON 404: there is nothing there."""
    body = json.dumps([{"content": "injected"}]) if method == "POST" else None
    response = httpx.request(method, f"{keyless_url}{path}", content=body, timeout=10)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


def test_a_scripted_reply_cannot_reach_the_next_user(keyless_url: str) -> None:
    """GIVEN an attacker POSTing a reply script and a fault
    WHEN the next user asks something
    THEN the simulated model answers that user, streaming, and says it is simulated."""
    with httpx.Client(timeout=30) as http:
        for script in ([{"content": "PWNED"}], [{"fault": "500", "times": 99}]):
            assert http.post(f"{keyless_url}/simulator/_sim/script", json=script).is_client_error
        turn = stream_chat(http, f"{keyless_url}/chat", params={"prompt": "Hello there"})
        health = http.get(f"{keyless_url}/healthz").json()
    assert turn.status == 200
    started, last = turn.events[0], turn.last
    assert started["lifecycle"] == "started"
    assert started["model"] == "simulator" and started["simulated"] is True
    assert last["lifecycle"] == "done" and last["finish_reason"] == "stop"
    assert "PWNED" not in turn.text and "built-in simulator" in turn.text
    assert "“Hello there”" in turn.text
    # Streamed token by token at the simulated pace, not in one piece.
    token_times = [t for t, e in zip(turn.times, turn.events, strict=True) if "token" in e]
    assert len(token_times) > 10
    assert token_times[-1] - token_times[0] >= 5 * DELAY_MS / 1000
    assert health["simulated"] is True and health["model"] == "simulator"


def test_a_tool_turn_runs_on_the_simulated_model(keyless_url: str) -> None:
    with httpx.Client(timeout=30) as http:
        turn = stream_chat(http, f"{keyless_url}/chat", params={"prompt": "What is 6*7?"})
    calls = [e["tool_call"] for e in turn.events if "tool_call" in e]
    results = [e["tool_result"] for e in turn.events if "tool_result" in e]
    assert [c["name"] for c in calls] == ["calculator"]
    assert results[0]["ok"] is True and results[0]["output"].endswith("42")
    assert turn.text == f"The calculator says **{results[0]['output']}**."
    assert turn.last["lifecycle"] == "done"


def test_a_real_model_is_not_reported_as_simulated(
    simulator: SimulatorServer, live_app: object
) -> None:
    """With a key (the HTTP simulator standing in for the provider), nothing says simulated."""
    url = live_app(settings_for(simulator)).url  # type: ignore[operator]
    with httpx.Client(timeout=30) as http:
        turn = stream_chat(http, f"{url}/chat", params={"prompt": "hi"})
        health = http.get(f"{url}/healthz").json()
    assert "simulated" not in turn.events[0] and turn.events[0]["model"] == "test-model"
    assert health["simulated"] is False


def test_the_app_mounts_nothing_but_the_page() -> None:
    app = create_app(keyless_settings())
    mounts = [route for route in app.routes if isinstance(route, Mount)]
    assert [m.path for m in mounts] == [""]  # StaticFiles at "/", after every route
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not any("sim" in path for path in paths)


def test_serving_the_app_never_imports_the_simulator() -> None:
    """The uvicorn app, the Mangum handler and the serve module, built with no key in a fresh
    interpreter, leave `simulator` out of sys.modules."""
    probe = (
        "import sys, handlers.app, handlers.buffered, handlers.serve, handlers.cli\n"
        "handlers.app.create_app(); handlers.buffered.handler\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulator'))\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ACCESS_KEY", "SESSION_STORE", "AWS_"))
    } | {"SESSION_STORE": "memory"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["core", "handlers"])
def test_no_app_module_imports_the_simulator(package: str) -> None:
    """The dependency rule, read from the source: core and handlers never import `simulator`."""
    offenders = []
    for path in sorted((ROOT / "src" / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "simulator"]
    assert offenders == []
