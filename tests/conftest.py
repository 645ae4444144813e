"""Shared fixtures: real servers on 127.0.0.1 free ports (streaming needs a socket)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from core.settings import Settings
from handlers.app import create_app
from handlers.container import build_services
from handlers.serve import uvicorn_options
from simulator import Simulator, create_simulator

TEST_KEY = "sk-test-0123456789abcdefSECRET"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an ASGI app in a background thread on a free loopback port."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # h11 whatever else is installed (llmock brings httptools): one HTTP stack for every run.
        options = {"log_level": "warning", "lifespan": "on", "http": "h11"} | options
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class SimulatorServer:
    sim: Simulator
    url: str  # base URL, ends in /v1

    @property
    def log(self) -> list[Any]:
        return list(self.sim.log)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """The OpenAI-compatible simulator on its own port, requiring TEST_KEY."""
    app = create_simulator(token_delay_ms=0, api_key=TEST_KEY)
    with LiveServer(app) as server:
        yield SimulatorServer(sim=app.state.simulator, url=f"{server.url}/v1")


def settings_for(sim: SimulatorServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_base_url": sim.url,
        "openai_api_key": TEST_KEY,
        "openai_model": "test-model",
        "system_prompt": "You are a test assistant.",
        "session_store": "memory",
        "first_token_timeout_seconds": 5,
        "idle_timeout_seconds": 5,
        "rate_limit_per_minute": 0,
    }
    values.update(overrides)
    return Settings(**values)


AppFactory = Callable[..., LiveServer]


@pytest.fixture
def live_app(simulator: SimulatorServer) -> Iterator[AppFactory]:
    """Start the real app (talking to the simulator over HTTP) on a free port."""
    servers: list[LiveServer] = []

    def start(settings: Settings | None = None, **kwargs: Any) -> LiveServer:
        settings = settings or settings_for(simulator)
        app: FastAPI = create_app(settings, services=build_services(settings, **kwargs))
        server = LiveServer(app, **uvicorn_options(settings) | {"log_level": "warning"})
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


@pytest.fixture
def app_url(live_app: AppFactory) -> str:
    return live_app().url


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client
