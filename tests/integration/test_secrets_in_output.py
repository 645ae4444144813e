"""No secret and no prompt in the served process's output at DEBUG; no key echo reaches a client.

Issue 11, points 2 and 3, reproduced on the served process (`python -m handlers.serve`, what
`make serve` and run.sh start) as a child with LOG_LEVEL=DEBUG, its stdout and stderr captured:

- a whole turn (with a tool call) and a follow-up on DynamoDB (moto) with distinctive API key,
  access key, AWS credential and prompt values: at DEBUG botocore used to print the request
  bodies (prompts) and the signed headers (credentials);
- a provider echoing the API key in a mid-stream error chunk or quoting it without its prefix
  in a 400 body: the key used to reach the client and the turn's log line.

Neither the values nor any 8-character run of a secret may appear.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from simulator import Simulator, create_simulator
from tests.conftest import LiveServer, free_port
from tests.dynamodb_table import create_table_from_template
from tests.sse_client import stream_chat
from tests.store_fixtures import FAKE_REGION, moto_endpoint

ROOT = Path(__file__).resolve().parents[2]
MIN_RUN = 8

API_KEY = "PlainSecretValue9876xyz"
ACCESS_KEY = "AccessKeyQuokka5521vbn"
AWS_ACCESS_KEY_ID = "ASIAQ7DISTINCT3K9ZP2"
AWS_SECRET_ACCESS_KEY = "Zq8vW3xK1mN5bT7yR2pL9dF4hJ6gS0cA/EvQuoll"
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEKr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDkokaburraSessToken42"
PROMPT = "PROMPT-CANARY-dynamo-okapi-3141 what is 6*7?"
FOLLOW_UP = "FOLLOWUP-CANARY-lemur-2718 and the time in Europe/Oslo?"
SECRETS = (API_KEY, ACCESS_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)


def runs_of(secret: str) -> set[str]:
    return {secret[i : i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1)}


def assert_clean(text: str, secrets: tuple[str, ...], where: str) -> None:
    for secret in secrets:
        leaked = sorted(run for run in runs_of(secret) if run in text)
        assert leaked == [], f"{where} holds {leaked[:3]} of a secret"


class Served:
    """`python -m handlers.serve` as a child, with exactly the given environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "SYSTEMROOT") if k in os.environ}
        self.env = (
            base | env | {"HOST": "127.0.0.1", "PORT": str(self.port), "PYTHONUNBUFFERED": "1"}
        )
        self.output = ""

    def __enter__(self) -> Served:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "handlers.serve"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
            if self.process.poll() is not None:
                break
        self.process.kill()
        raise AssertionError(f"server did not start: {self.process.communicate()[0][-3000:]}")

    def __exit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.output, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate(timeout=5)


@pytest.fixture
def upstream() -> Iterator[tuple[str, Simulator]]:
    """The HTTP simulator standing in for the provider, requiring API_KEY."""
    app = create_simulator(token_delay_ms=0, api_key=API_KEY)
    with LiveServer(app) as server:
        yield f"{server.url}/v1", app.state.simulator


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN,
        "AWS_DEFAULT_REGION": FAKE_REGION,
        "AWS_REGION": FAKE_REGION,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
    }


def moto_client(service: str, endpoint: str) -> object:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint,
        region_name=FAKE_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.mark.parametrize("keys_from", ["environment", "secrets_manager"])
def test_a_debug_turn_on_dynamodb_prints_no_secret_and_no_prompt(
    upstream: tuple[str, Simulator], keys_from: str
) -> None:
    """GIVEN the served process at LOG_LEVEL=DEBUG on DynamoDB, with distinctive secrets
    (API key and access key from the environment, or read from Secrets Manager)
    WHEN a tool turn, a follow-up, a history read and a refused request are served
    THEN its whole output holds no secret (nor 8 characters of one) and no prompt."""
    base_url, sim = upstream
    endpoint = moto_endpoint()
    table = f"sessions-{uuid.uuid4().hex}"
    create_table_from_template(moto_client("dynamodb", endpoint), table)  # type: ignore[arg-type]
    env = aws_environment(endpoint) | {
        "SESSION_STORE": "dynamodb",
        "SESSIONS_TABLE": table,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_MODEL": "debug-model",
        "LOG_LEVEL": "DEBUG",
        "DAILY_TOKEN_QUOTA": "100000",
    }
    if keys_from == "environment":
        env |= {"OPENAI_API_KEY": API_KEY, "ACCESS_KEY": ACCESS_KEY}
    else:
        secrets = moto_client("secretsmanager", endpoint)
        for variable, value in (
            ("OPENAI_API_KEY_SECRET", API_KEY),
            ("ACCESS_KEY_SECRET", ACCESS_KEY),
        ):
            name = f"{variable.lower()}-{uuid.uuid4().hex}"
            env[variable] = secrets.create_secret(Name=name, SecretString=value)["ARN"]  # type: ignore[attr-defined]

    with Served(env) as served, httpx.Client(timeout=30) as http:
        auth = {"Authorization": f"Bearer {ACCESS_KEY}"}
        first = stream_chat(
            http, f"{served.url}/chat", method="POST", json={"prompt": PROMPT}, headers=auth
        )
        assert first.last.get("lifecycle") == "done", first.events
        assert [e["tool_call"]["name"] for e in first.events if "tool_call" in e] == ["calculator"]
        second = stream_chat(
            http,
            f"{served.url}/chat",
            params={"prompt": FOLLOW_UP, "session": first.session, "key": ACCESS_KEY},
        )
        assert second.last.get("lifecycle") == "done", second.events
        history = http.get(f"{served.url}/sessions/{first.session}", headers=auth)
        assert history.status_code == 200
        assert history.json()["messages"][0]["content"] == PROMPT  # stored in DynamoDB
        wrong = http.get(f"{served.url}/chat", params={"prompt": PROMPT, "key": ACCESS_KEY[:-1]})
        assert wrong.status_code == 401
    # The provider saw the real key: the turn really went through it.
    assert {entry["authorization"] for entry in sim.log} == {f"Bearer {API_KEY}"}

    output = served.output
    assert '"message":"turn"' in output, output[-2000:]  # the process did log, at DEBUG
    assert_clean(output, SECRETS, f"the DEBUG output ({keys_from})")
    for text in (PROMPT, FOLLOW_UP, "okapi-3141", "lemur-2718"):
        assert text not in output, f"{text!r} is in the DEBUG output"


@pytest.mark.parametrize(
    ("key", "reply", "echo"),
    [
        (
            "PlainSecretValue9876",
            {"content": "one two three four", "fault": "error_chunk", "after_chunks": 2},
            "Incorrect API key provided: PlainSecretValue9876. Check it.",
        ),
        (
            "PlainSecretValue9876",
            {"fault": "400"},
            "Invalid 'user': 'xPlainSecretValue987' is not allowed",
        ),
        (
            "SUPERSECRETKEY123456",
            {"fault": "400"},
            "Invalid value for 'model': test-SUPERSECRETKEY123456 does not exist.",
        ),
        (
            "SUPERSECRETKEY123456",
            {"chunks": ["a", "b", "c"], "fault": "error_chunk", "after_chunks": 1},
            "key …ETKEY123456 revoked",
        ),
    ],
)
def test_a_provider_echoing_the_key_reaches_neither_client_nor_log(
    key: str, reply: dict[str, object], echo: str
) -> None:
    """GIVEN OPENAI_API_KEY set to a value without a known prefix
    WHEN the provider echoes it (whole, prefixed, or a run of 8+ of its characters) in an
    error chunk mid-stream or in a 400 body
    THEN the client's `{"error"}` and the served process's output hold no 8 characters of it,
    and the error still says what happened."""
    sim_app = create_simulator(token_delay_ms=0, api_key=key)
    sim: Simulator = sim_app.state.simulator
    with LiveServer(sim_app) as upstream_server:
        env = {
            "OPENAI_API_KEY": key,
            "OPENAI_BASE_URL": f"{upstream_server.url}/v1",
            "SESSION_STORE": "memory",
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "DEBUG",
        }
        with Served(env) as served, httpx.Client(timeout=30) as http:
            sim.script({**reply, "error_message": echo})  # type: ignore[typeddict-item]
            turn = stream_chat(http, f"{served.url}/chat", params={"prompt": "hello"})
    assert sim.log[-1]["outcome"] == reply["fault"]
    error = turn.last["error"]
    assert_clean(error, (key,), "the client's error")
    assert "[redacted]" in error
    if reply["fault"] == "400":
        assert error.startswith("the model provider refused the request (HTTP 400): Invalid")
    else:
        assert [e["token"] for e in turn.events if "token" in e] == (
            ["one", " two"] if "content" in reply else ["a"]
        )
    assert '"message":"turn failed"' in served.output
    assert_clean(served.output, (key,), "the DEBUG output")
