"""Run `run.sh` as the Lambda Web Adapter does: template environment, a port, a readiness check.

The environment is template.yaml's own `ChatFunction` environment in streaming mode, with the
parameter defaults filled in, so a variable the app cannot parse fails here and not on Lambda.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.dynamodb_table import create_table_from_template, load_template
from tests.sse_client import Received, stream_chat
from tests.store_fixtures import moto_endpoint

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
TOKEN_DELAY_MS = 20  # the simulator's, so streamed tokens arrive visibly apart


def _resolve(
    value: Any, params: dict[str, str], conditions: dict[str, bool], refs: dict[str, str]
) -> Any:
    """Evaluate the few intrinsics the function's environment uses (Ref, If)."""
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        name = value["Ref"]
        if name == "AWS::NoValue":
            return None
        return refs[name] if name in refs else params[name]
    if "Fn::If" in value:
        condition, then, otherwise = value["Fn::If"]
        return _resolve(then if conditions[condition] else otherwise, params, conditions, refs)
    raise AssertionError(f"unexpected intrinsic in the environment: {value}")


def template_environment(*, sessions_table: str, **parameters: str) -> dict[str, str]:
    """ChatFunction's environment for the given parameters (defaults for the rest)."""
    template = load_template()
    params = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()}
    params.update(parameters)
    conditions = {
        "IsStreaming": params["Streaming"] == "true",
        "HasApiKeySecret": params["OpenAIApiKeySecretArn"] != "",
        "HasAccessKeySecret": params["AccessKeySecretArn"] != "",
        "HasAllowedOrigins": params["AllowedOrigins"] != "",
        "HasReservedConcurrency": params["ReservedConcurrency"] != "0",
        "IsProd": params["Environment"] == "prod",
        "HasSecretsKmsKey": params["SecretsKmsKeyArn"] != ""
        and (params["OpenAIApiKeySecretArn"] != "" or params["AccessKeySecretArn"] != ""),
        "HasTableKmsKey": params["TableKmsKeyArn"] != "",
        "HasAlarmEmail": params["AlarmEmail"] != "",
    }
    assert set(conditions) == set(template["Conditions"]), "new template condition: teach me"
    refs = {"SessionsTable": sessions_table}
    variables = template["Resources"]["ChatFunction"]["Properties"]["Environment"]["Variables"]
    resolved = {k: _resolve(v, params, conditions, refs) for k, v in variables.items()}
    return {k: str(v) for k, v in resolved.items() if v is not None}


def fake_aws_environment(dynamodb_endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint,
    }


class RunSh:
    """`run.sh` in `task_root` as a child process; the caller's env is NOT inherited."""

    def __init__(self, task_root: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.task_root = task_root
        self.url = f"http://127.0.0.1:{port}"
        # As on Lambda: the adapter's port, the task root, and that directory as cwd.
        self.env = env | {"AWS_LWA_PORT": str(port), "LAMBDA_TASK_ROOT": str(task_root)}
        self.log_path = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunSh:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.task_root / "run.sh")],
                cwd=self.task_root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """The adapter's readiness check: GET AWS_LWA_READINESS_CHECK_PATH until it answers."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"run.sh exited {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"run.sh not ready in {READY_TIMEOUT_SECONDS}s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, as Lambda sends at shutdown; the server must exit by itself."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
                raise AssertionError(f"run.sh ignored SIGTERM:\n{self.log()}") from None
        return self.process.returncode

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def lambda_like_environment(python_bin: Path) -> dict[str, str]:
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
    return env | aws | template_environment(sessions_table=table)


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
