"""run.sh, started as the Lambda Web Adapter starts it, streams a turn over HTTP.

Source-directory run: LAMBDA_TASK_ROOT = src/, the app's venv Python on PATH, the template's
streaming environment (DynamoDB sessions in a moto server on loopback, table built from the
template, no key so the built-in simulator answers). tests/integration/test_sam_build.py runs
the same against the built artifact with Python 3.13.
"""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path

import boto3
import httpx

from tests.conftest import free_port
from tests.dynamodb_table import create_table_from_template
from tests.integration.lambda_process import (
    ROOT,
    RunSh,
    fake_aws_environment,
    template_environment,
)
from tests.sse_client import Received, stream_chat
from tests.store_fixtures import moto_endpoint

TOKEN_DELAY_MS = 20


def lambda_like_environment(python_bin: Path) -> tuple[dict[str, str], str]:
    """Template env + fake AWS + a fresh moto table; PATH has only `python_bin` and the system."""
    endpoint = moto_endpoint()
    table = f"sessions-{uuid.uuid4().hex}"
    aws = fake_aws_environment(endpoint)
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=aws["AWS_DEFAULT_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    create_table_from_template(client, table)
    env = {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "SIMULATOR_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
    }
    return env | aws | template_environment(sessions_table=table), table


def assert_streamed_turn(received: Received) -> None:
    assert received.status == 200, received.events
    assert received.headers["content-type"].startswith("text/event-stream")
    assert received.events[0]["lifecycle"] == "started"
    assert received.last["lifecycle"] == "done"
    assert len(received.tokens) >= 5
    # Streamed, not buffered: tokens arrive spread over the simulator's per-token delay.
    token_times = [t for t, e in zip(received.times, received.events, strict=True) if "token" in e]
    assert token_times[-1] - token_times[0] >= 3 * TOKEN_DELAY_MS / 1000


def assert_clean_shutdown(server: RunSh) -> None:
    """SIGTERM (Lambda's shutdown): uvicorn finishes, then re-raises the signal (exit -15)."""
    assert server.stop() in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete" in server.log()


def exercise(server: RunSh) -> None:
    """One streamed turn, then the session read back from DynamoDB."""
    with httpx.Client(timeout=30) as client:
        received = stream_chat(client, f"{server.url}/chat", params={"prompt": "hello"})
        assert_streamed_turn(received)
        stored = client.get(f"{server.url}/sessions/{received.session}")
        assert stored.status_code == 200
        messages = stored.json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == "hello"
        assert messages[1]["content"] == received.text
        # No CORS from the app on Lambda (the template never sets CORS_ALLOW_ORIGINS).
        page = client.get(f"{server.url}/", headers={"origin": "https://chat.example.com"})
        assert page.status_code == 200
        assert "access-control-allow-origin" not in page.headers


def test_run_sh_from_source_streams_a_turn(tmp_path: Path) -> None:
    env, _ = lambda_like_environment(Path(sys.executable).parent)
    assert env["SESSION_STORE"] == "dynamodb" and env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    with RunSh(ROOT / "src", free_port(), env, tmp_path / "run.log") as server:
        exercise(server)
        assert_clean_shutdown(server)
