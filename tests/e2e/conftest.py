"""Browser-test fixtures: the real app (`python -m handlers.serve`, simulator) and system Chromium.

The server runs as `make serve` does, in a subprocess on a free loopback port, with no API key so
the built-in simulator answers (mounted at /simulator; tests queue replies through
`POST /simulator/_sim/script`). Chromium is the distribution's /usr/bin/chromium driven by
Python playwright; `playwright install` is never needed.
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


@dataclass
class AppServer:
    """The app under test: its base URL and a client for the simulator's control routes."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def page_url(self) -> str:
        return self.url + PAGE_PATH

    def script(self, *replies: dict[str, Any]) -> None:
        """Queue simulator replies; each model request pops the next one."""
        response = self.http.post(f"{self.url}/simulator/_sim/script", json=list(replies))
        response.raise_for_status()

    def reset(self) -> None:
        self.http.post(f"{self.url}/simulator/_sim/reset").raise_for_status()

    def session(self, session_id: str) -> httpx.Response:
        return self.http.get(f"{self.url}/sessions/{session_id}")


@contextmanager
def serve_app(tmp: Path, **env_overrides: str) -> Iterator[AppServer]:
    """`python -m handlers.serve` with the simulator and a throwaway SQLite file."""
    port = _free_port()
    # The developer's own settings must not leak in: drop every env var Settings would read.
    settings_vars = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_vars}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        SESSION_STORE="sqlite",
        SQLITE_PATH=str(tmp / "sessions.db"),
        RATE_LIMIT_PER_MINUTE="0",
        LOG_LEVEL="WARNING",
        # The standalone-page test opens index.html from file://, whose origin is "null".
        CORS_ALLOW_ORIGINS="null",
    )
    env.update(env_overrides)
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "handlers.serve"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = AppServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited during start-up:\n{log_path.read_text()}")
            try:
                if server.http.get(f"{server.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer /healthz in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        server.http.close()


@pytest.fixture(scope="session")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app as `make serve` runs it, shared by the browser tests (queue reset per test)."""
    with serve_app(tmp_path_factory.mktemp("e2e-server")) as server:
        yield server


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
