"""The bench's child processes (the simulator, the app) on 127.0.0.1 free ports, and the control
calls it makes to them: shared by the relay measurements (run.py) and resume lag (resume.py)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Server:
    """One child process listening on 127.0.0.1:port; its output goes to a log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class Servers:
    """Starts the children and always stops them (normal exit, error, Ctrl-C, SIGTERM)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Server] = []

    def start(self, name: str, args: Sequence[str], env: dict[str, str], cpu: int | None) -> Server:
        port = free_port()
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [a.replace("{port}", str(port)) for a in args],
                cwd=ROOT,
                env={**env, "PORT": str(port)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if cpu is not None:
            # Right after the fork, long before the interpreter starts any thread (they inherit).
            os.sched_setaffinity(process.pid, {cpu})
        server = Server(name, port, process, log_path)
        self.running.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.running:
            if server.process.poll() is None:
                server.process.terminate()
        for server in self.running:
            try:
                server.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=5)
        self.running.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http(method: str, port: int, path: str, body: Any = None, timeout: float = 5.0) -> Any:
    """A control call (script, reset, health) to 127.0.0.1, never through a proxy."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method)
    request.add_header("content-type", "application/json")
    with _NO_PROXY.open(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def wait_ready(server: Server, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(OSError):
            http("GET", server.port, path, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer {path} within {timeout:.0f} s")


def app_env(sim_port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("ACCESS_KEY", "OPENAI_API_KEY_SECRET", "DAILY_TOKEN_QUOTA", "CORS_ALLOW_ORIGINS")
    }
    env.update(
        HOST=HOST,
        OPENAI_BASE_URL=f"http://{HOST}:{sim_port}/v1",
        OPENAI_API_KEY="bench",
        SESSION_STORE="memory",
        RATE_LIMIT_PER_MINUTE="0",
        LOG_LEVEL="WARNING",
        TOOLS="",
        PYTHONUNBUFFERED="1",
    )
    return env
