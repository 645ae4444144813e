"""`resume_lag_ms`: an event produced on one app process -> seen by a reader on another.

Two app processes share one store (a SQLite file, or one DynamoDB table on a moto server);
the simulator stamps each chunk with `time.monotonic_ns()` (system-wide on Linux). A turn runs
on A; a reader follows it on B through `GET /sessions/{id}/stream`, which polls the turn log.
The lag of a token is B's receive time minus its stamp: the producer's batch window (<= 250 ms)
plus the reader's poll interval (<= 250 ms) plus one write and one read of the store.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.servers import HOST, Servers, app_env, http, wait_ready

TOKENS = 120
PACE_MS = 25.0
SKIP_AFTER_JOIN_NS = 500_000_000  # tokens produced before the reader was polling live


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _one_turn(sim_port: int, a_port: int, b_port: int) -> list[float]:
    http("POST", sim_port, "/_sim/reset", {})
    reply = {"stamp": True, "count": TOKENS, "delay_ms": PACE_MS}
    http("POST", sim_port, "/_sim/script", [reply])
    lags: list[float] = []
    chat = f"http://{HOST}:{a_port}/chat"
    with (
        httpx.Client(timeout=60, trust_env=False) as client,
        client.stream("POST", chat, json={"prompt": "x"}) as a,
    ):
        session = ""
        for line in a.iter_lines():
            if line.startswith("data: "):
                session = json.loads(line[6:])["session"]
                break
        joined = time.monotonic_ns()
        url = f"http://{HOST}:{b_port}/sessions/{session}/stream"
        with client.stream("GET", url) as b:
            for line in b.iter_lines():
                if not line.startswith("data: "):
                    continue
                seen = time.monotonic_ns()
                data = json.loads(line[6:])
                if "token" in data:
                    stamp = int(data["token"].strip())
                    if stamp > joined + SKIP_AFTER_JOIN_NS:
                        lags.append((seen - stamp) / 1e6)
                if data.get("lifecycle") == "done" or "error" in data:
                    break
    return lags


def _store_env(kind: str, workdir: Path, servers: Servers) -> dict[str, str]:
    if kind == "sqlite":
        return {"SESSION_STORE": "sqlite", "SQLITE_PATH": str(workdir / "sessions.db")}
    import boto3
    from tests.dynamodb_table import create_table_from_template

    moto = servers.start(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", "{port}"],
        dict(os.environ),
        None,
    )
    wait_ready(moto, "/moto-api/data.json")
    endpoint = f"http://{HOST}:{moto.port}"
    aws = {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    }
    table = f"bench-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    create_table_from_template(client, table)
    return {"SESSION_STORE": "dynamodb", "SESSIONS_TABLE": table, **aws}


def measure_resume_lag(turns: int = 3) -> dict[str, Any]:
    """p50/p95 of the lag, per store, over `turns` turns of TOKENS tokens."""
    results: dict[str, Any] = {}
    python = sys.executable
    for kind in ("sqlite", "moto"):
        with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
            workdir = Path(tmp)
            servers = Servers(workdir)
            try:
                sim = servers.start(
                    "simulator",
                    [python, "-m", "simulator", "--host", HOST, "--port", "{port}"],
                    dict(os.environ, PYTHONUNBUFFERED="1"),
                    None,
                )
                wait_ready(sim, "/v1/models")
                env = app_env(sim.port) | _store_env(kind, workdir, servers)
                a = servers.start("app-a", [python, "-m", "handlers.serve"], env, None)
                b = servers.start("app-b", [python, "-m", "handlers.serve"], env, None)
                wait_ready(a, "/healthz")
                wait_ready(b, "/healthz")
                lags: list[float] = []
                for _ in range(turns):
                    lags += _one_turn(sim.port, a.port, b.port)
            except BaseException:
                for server in servers.running:
                    print(f"--- {server.name} (tail) ---\n{server.log_tail()}", file=sys.stderr)
                raise
            finally:
                servers.stop_all()
        results[kind] = {
            "p50": _pct(lags, 0.50),
            "p95": _pct(lags, 0.95),
            "mean": round(statistics.fmean(lags), 1),
            "events": len(lags),
        }
    return results


if __name__ == "__main__":
    print(json.dumps(measure_resume_lag(), indent=2))
