"""Telemetry: one JSON log line per turn (never per token), no prompt at INFO, no key ever,
EMF metrics on Lambda only.

Each scenario runs the real app in a child process (`tests.unit.telemetry_child`, no sockets):
Powertools and logging are configured once per process, so a fresh process shows exactly what
production would print, and every byte it writes to stdout and stderr is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.unit.telemetry_child import (
    ACCESS_KEY,
    LAMBDA_REQUEST_ID,
    OPENAI_KEY,
    PROMPT,
    TOKENS,
)

ROOT = Path(__file__).resolve().parents[2]
TURN_FIELDS = {
    "request_id",
    "session_id",
    "model",
    "chunks_out",
    "time_to_first_token_ms",
    "duration_ms",
    "outcome",
}


@dataclass
class Run:
    stdout: str
    stderr: str
    results: dict[str, dict[str, Any]]

    @property
    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def turn_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.json_lines if line.get("message") in ("turn", "turn failed")]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return [line for line in self.json_lines if "_aws" in line]


def run_child(tmp_path: Path, *, log_level: str, on_lambda: bool) -> Run:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "POWERTOOLS_", "OPENAI_", "EMIT_METRICS", "LOG_LEVEL"))
    }
    if on_lambda:
        env["AWS_LAMBDA_FUNCTION_NAME"] = "sse-chat-agent-test"
    results = tmp_path / f"results-{log_level}-{on_lambda}.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.telemetry_child", str(results), log_level],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    by_name = {r["name"]: r for r in json.loads(results.read_text())}
    return Run(done.stdout, done.stderr, by_name)


@pytest.fixture(scope="module")
def local_info(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_child(tmp_path_factory.mktemp("info"), log_level="INFO", on_lambda=False)


@pytest.fixture(scope="module")
def lambda_debug(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_child(tmp_path_factory.mktemp("debug"), log_level="DEBUG", on_lambda=True)


def test_the_scenarios_ran_as_scripted(local_info: Run) -> None:
    good, failed = local_info.results["good"], local_info.results["upstream_401"]
    assert good["status"] == 200 and good["events"][-1]["lifecycle"] == "done"
    assert [e["token"] for e in good["events"] if "token" in e] == TOKENS
    assert failed["status"] == 200 and set(failed["events"][-1]) == {"error"}
    assert local_info.results["wrong_key"]["status"] == 401
    assert local_info.results["bad_body"]["status"] == 400


def test_one_log_line_per_turn_not_per_token(local_info: Run) -> None:
    """GIVEN a 20-token turn, a failed turn and two refused requests
    THEN exactly two turn lines: refusals are not turns, tokens are not lines."""
    assert [line["message"] for line in local_info.turn_lines] == ["turn", "turn failed"]
    assert not [line for line in local_info.json_lines if "t0 " in json.dumps(line)]


def test_the_turn_line_carries_ids_model_tokens_timings_and_outcome(local_info: Run) -> None:
    good, failed = local_info.turn_lines
    session = local_info.results["good"]["events"][0]["session"]
    assert set(good) >= TURN_FIELDS
    assert good["level"] == "INFO" and good["service"] == "sse-chat-agent"
    # Off Lambda a client's own `x-amzn-request-context` header is not trusted: a new id.
    assert good["request_id"] != LAMBDA_REQUEST_ID and len(good["request_id"]) == 32
    assert good["session_id"] == session
    assert good["model"] == "canary-model"
    assert good["outcome"] == "complete"
    assert good["chunks_out"] == len(TOKENS) == good["completion_tokens"]
    assert 0 <= good["time_to_first_token_ms"] <= good["duration_ms"] < 10_000
    # A failed turn: a warning with the user-safe reason; no first token, so no such timing.
    assert failed["level"] == "WARNING" and failed["outcome"] == "failed"
    assert failed["request_id"] == "req-401"  # from X-Request-Id
    assert failed["chunks_out"] == 0 and failed.get("time_to_first_token_ms") is None
    assert "API key" in failed["error"] and isinstance(failed["duration_ms"], float)


def test_on_lambda_the_turn_line_carries_lambdas_request_id(lambda_debug: Run) -> None:
    good = lambda_debug.turn_lines[0]
    assert good["request_id"] == LAMBDA_REQUEST_ID  # from Lambda's request context


@pytest.mark.parametrize("run_name", ["local_info", "lambda_debug"])
def test_no_key_ever_reaches_the_output(run_name: str, request: pytest.FixtureRequest) -> None:
    """The provider key and the access key (sent in `?key=` and in Authorization) appear
    nowhere in stdout or stderr, at INFO or at DEBUG, not even in part."""
    run: Run = request.getfixturevalue(run_name)
    output = run.stdout + run.stderr
    for secret in (OPENAI_KEY, ACCESS_KEY):
        for piece in (secret, secret[-12:], secret[:16]):
            assert piece not in output, f"{piece!r} leaked"


@pytest.mark.parametrize("run_name", ["local_info", "lambda_debug"])
def test_the_prompt_is_never_logged(run_name: str, request: pytest.FixtureRequest) -> None:
    """Not at INFO, not at DEBUG either (LOG_LEVEL is for the project's own loggers)."""
    run: Run = request.getfixturevalue(run_name)
    output = run.stdout + run.stderr
    assert PROMPT not in output and "purple-walrus" not in output


def test_no_metrics_are_printed_off_lambda(local_info: Run) -> None:
    assert local_info.metrics == []


def test_emf_metrics_are_printed_on_lambda(lambda_debug: Run) -> None:
    """GIVEN AWS_LAMBDA_FUNCTION_NAME is set THEN each turn prints one EMF document that
    CloudWatch turns into metrics: TurnsCompleted / TurnsFailed, TokensOut, TimeToFirstToken."""
    good, failed = lambda_debug.metrics
    for document in (good, failed):
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "SseChatAgent"
        assert isinstance(document["_aws"]["Timestamp"], int)
        declared = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        for name in declared:
            assert name in document, f"metric {name} declared without a value"
    assert {m["Name"]: m["Unit"] for m in good["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "TurnsCompleted": "Count",
        "TokensOut": "Count",
        "TimeToFirstToken": "Milliseconds",
    }
    assert good["TurnsCompleted"] == [1.0] and good["TokensOut"] == [float(len(TOKENS))]
    assert 0 < good["TimeToFirstToken"][0] < 10_000
    assert failed["TurnsFailed"] == [1.0] and failed["TokensOut"] == [0.0]
    assert "TimeToFirstToken" not in failed and "TurnsCompleted" not in failed
    # Still one log line per turn next to the metrics.
    assert len(lambda_debug.turn_lines) == 2
