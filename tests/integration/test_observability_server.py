"""The served process's whole output (app, uvicorn, httpx loggers) never holds a key or a
prompt: `python -m handlers.serve` (what `make serve` and run.sh start) as a child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_KEY, SimulatorServer, free_port
from tests.sse_client import stream_chat

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "ak-canary-SERVED-5c4b3a2918f7e6d5"
PROMPT = "PROMPT-CANARY-served-narwhal-2718"


def serve(simulator: SimulatorServer, log_level: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "POWERTOOLS_", "OPENAI_", "ACCESS_KEY", "LOG_LEVEL"))
    } | {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "OPENAI_API_KEY": TEST_KEY,
        "OPENAI_BASE_URL": simulator.url,
        "OPENAI_MODEL": "served-model",
        "ACCESS_KEY": ACCESS_KEY,
        "SESSION_STORE": "memory",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": log_level,
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "handlers.serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not start: {process.communicate(timeout=5)[0][-2000:]}")


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_served_output_never_holds_a_key_nor_the_prompt(
    simulator: SimulatorServer, log_level: str
) -> None:
    """GIVEN the server run as in production with a provider key and an access key
    WHEN a good turn (key in `?key=`), a turn whose provider rejects the key (Bearer), a
    wrong access key and an unknown path are served
    THEN the process's output has one JSON line per turn, and neither key nor the prompt
    anywhere, at INFO or DEBUG."""
    process, url = serve(simulator, log_level)
    try:
        with httpx.Client(timeout=10) as http:
            simulator.sim.script({"chunks": [f"w{i} " for i in range(15)]}, {"fault": "401"})
            good = stream_chat(http, f"{url}/chat", params={"prompt": PROMPT, "key": ACCESS_KEY})
            assert good.last["lifecycle"] == "done" and len(good.tokens) == 15
            bearer = {"Authorization": f"Bearer {ACCESS_KEY}"}
            failed = stream_chat(
                http, f"{url}/chat", method="POST", json={"prompt": PROMPT}, headers=bearer
            )
            assert "API key" in failed.last["error"]
            wrong = http.get(f"{url}/chat", params={"prompt": PROMPT, "key": ACCESS_KEY[:-1]})
            assert wrong.status_code == 401
            assert http.get(f"{url}/nowhere", params={"key": ACCESS_KEY}).status_code == 404
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert "Uvicorn running" in output or "Application startup complete" in output
    lines = [json.loads(x) for x in output.splitlines() if x.startswith('{"level"')]
    turns = [x for x in lines if x.get("message") in ("turn", "turn failed")]
    assert [(t["outcome"], t["chunks_out"]) for t in turns] == [("complete", 15), ("failed", 0)]
    for secret in (TEST_KEY, ACCESS_KEY):
        for piece in (secret, secret[-12:], secret[:16]):
            assert piece not in output, f"{piece!r} leaked into the {log_level} output"
    assert PROMPT not in output and "narwhal" not in output
