"""Browser-test fixtures: the real app (`python -m handlers.serve`), its model, system Chromium.

The model is the standalone OpenAI-compatible simulator (`SIMULATOR_COMMAND`), a subprocess on
its own free loopback port that requires an API key; tests queue replies through its own
`POST /_sim/script`. The app runs as `make serve` does, in a subprocess on another free port,
pointed at the simulator with OPENAI_BASE_URL and OPENAI_API_KEY. Chromium is the
distribution's /usr/bin/chromium driven by Python playwright; `playwright install` is never
needed.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
AXE_JS = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 800, "height": 900}
PAGE_PATH = "/"
# The OpenAI-compatible simulator as its own process; `{port}` and `{api_key}` are filled in.
SIMULATOR_COMMAND = "-m simulator --port {port} --delay-ms 25 --api-key {api_key}"
SIMULATOR_KEY = "sk-e2e-simulator-key-0123456789"
STATIC_DIR = ROOT / "src" / "handlers" / "static"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


_skipped_because: list[str] = []


def _no_browser(reason: str) -> None:
    """Fail in CI (REQUIRE_BROWSER=1); elsewhere skip, loudly (see the terminal summary)."""
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"REQUIRE_BROWSER is set but {reason}", pytrace=False)
    message = f"!!! BROWSER TESTS SKIPPED: {reason} (CI sets REQUIRE_BROWSER=1 and fails instead)"
    _skipped_because.append(message)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped_because:
        terminalreporter.write_sep("!", _skipped_because[0], red=True, bold=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A second origin for the page (any static host, here Python's http.server), which the app
# allows with CORS_ALLOW_ORIGINS.
STATIC_ORIGIN = f"http://127.0.0.1:{_free_port()}"


@dataclass
class AppServer:
    """The app under test: its base URL, and a client for its simulator's control routes."""

    url: str
    simulator_url: str  # the simulator's root (its API is under /v1)
    log_path: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def page_url(self) -> str:
        return self.url + PAGE_PATH

    def script(self, *replies: dict[str, Any]) -> None:
        """Queue simulator replies; each model request pops the next one."""
        response = self.http.post(f"{self.simulator_url}/_sim/script", json=list(replies))
        response.raise_for_status()

    def reset(self) -> None:
        self.http.post(f"{self.simulator_url}/_sim/reset").raise_for_status()

    def model_log(self) -> list[Any]:
        """What the simulator saw: one entry per model request, oldest first."""
        entries: list[Any] = self.http.get(f"{self.simulator_url}/_sim/log").json()
        return entries

    def session(self, session_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/sessions/{session_id}")


@contextmanager
def _process(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, ready_url: str
) -> Iterator[None]:
    """A subprocess, logging to `log_path`, that is up once `ready_url` answers at all."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the {name} exited during start-up:\n{log_path.read_text()}")
            try:
                httpx.get(ready_url, timeout=2)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the {name} did not answer in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def serve_app(tmp: Path, **env_overrides: str) -> Iterator[AppServer]:
    """The simulator, then `python -m handlers.serve` against it with a throwaway SQLite file."""
    sim_port, port = _free_port(), _free_port()
    # The developer's own settings must not leak in: drop every env var Settings would read.
    settings_vars = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_vars}
    sim_argv = [
        sys.executable,
        *SIMULATOR_COMMAND.format(port=sim_port, api_key=SIMULATOR_KEY).split(),
    ]
    sim_url = f"http://127.0.0.1:{sim_port}"
    app_env = (
        env
        | {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "OPENAI_BASE_URL": f"{sim_url}/v1",
            "OPENAI_API_KEY": SIMULATOR_KEY,
            "SESSION_STORE": "sqlite",
            "SQLITE_PATH": str(tmp / "sessions.db"),
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
            # The standalone-page test serves index.html from a second origin.
            "CORS_ALLOW_ORIGINS": f"null,{STATIC_ORIGIN}",
        }
        | env_overrides
    )
    log_path = tmp / "server.log"
    server = AppServer(url=f"http://127.0.0.1:{port}", simulator_url=sim_url, log_path=log_path)
    try:
        with (
            _process("simulator", sim_argv, env, tmp / "simulator.log", f"{sim_url}/_sim/log"),
            _process(
                "app",
                [sys.executable, "-m", "handlers.serve"],
                app_env,
                log_path,
                f"{server.url}/healthz",
            ),
        ):
            yield server
    finally:
        server.http.close()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app as `make serve` runs it, shared by the browser tests (queue reset per test)."""
    with serve_app(tmp_path_factory.mktemp("e2e-server")) as server:
        yield server


@pytest.fixture(scope="session")
def static_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """static/ served by `python -m http.server` at STATIC_ORIGIN."""
    port = STATIC_ORIGIN.rsplit(":", 1)[1]
    argv = [sys.executable, "-m", "http.server", port, "--bind", "127.0.0.1", "-d", str(STATIC_DIR)]
    log = tmp_path_factory.mktemp("static") / "http.log"
    with _process("static server", argv, dict(os.environ), log, STATIC_ORIGIN + "/"):
        yield STATIC_ORIGIN


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """System Chromium, headless; skipped loudly (or failed under REQUIRE_BROWSER) if absent."""
    if not CHROMIUM.exists():
        _no_browser(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright Python package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageProbe:
    """What the page said while a test ran: uncaught errors and console errors."""

    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


@pytest.fixture
def probe() -> PageProbe:
    return PageProbe()


def _open_page(
    browser: Any, probe: PageProbe, request: pytest.FixtureRequest, **options: Any
) -> Iterator[Any]:
    """A fresh browser context (empty localStorage); a screenshot artifact after the test."""
    context = browser.new_context(viewport=DESKTOP, color_scheme="dark", **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("pageerror", lambda exc: probe.errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: probe.console.append(msg.text) if msg.type == "error" else None,
    )
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        context.close()
    assert not probe.errors, f"uncaught errors in the page: {probe.errors}"


@pytest.fixture
def page(
    browser: Any, app_server: AppServer, probe: PageProbe, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """The page on a desktop viewport, under the app's own Content-Security-Policy."""
    app_server.reset()
    yield from _open_page(browser, probe, request)


@pytest.fixture
def axe_page(
    browser: Any, app_server: AppServer, probe: PageProbe, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """Like `page`, but the CSP is bypassed so axe-core can be injected as a script tag."""
    app_server.reset()
    # Reduced motion also settles the entry animation, which axe would catch half-transparent.
    yield from _open_page(browser, probe, request, bypass_csp=True, reduced_motion="reduce")


@pytest.fixture
def axe_script() -> Path:
    if not AXE_JS.exists():
        pytest.fail(
            f"{AXE_JS} is missing: run `npm ci --prefix tests/e2e` (make test does)", pytrace=False
        )
    return AXE_JS
