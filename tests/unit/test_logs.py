"""LOG_LEVEL reaches the project's loggers only; libraries stay at WARNING; lines are redacted.

Each check runs in a fresh interpreter: logging is process-wide, configured once at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.settings import Settings
from handlers.serve import uvicorn_options
from handlers.telemetry import QUIET_LOGGERS

ROOT = Path(__file__).resolve().parents[2]
KEY = "PlainSecretValue9876xyz"
AWS_SECRET = "Zq8vW3xK1mN5bT7yR2pL9dF4hJ6gS0cA"


def child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "OPENAI_", "ACCESS_KEY", "LOG_LEVEL", "POWERTOOLS_"))
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=clean | env | {"SESSION_STORE": "memory"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "ERROR"])
def test_log_level_applies_to_the_project_loggers_only(level: str) -> None:
    done = child(
        """
        import json, logging
        from handlers.app import create_app
        create_app()
        names = ["root", "core.sessions.dynamodb", "handlers.app", "sse_chat_agent",
                 "botocore", "botocore.endpoint", "boto3.resources", "urllib3.connectionpool",
                 "s3transfer", "httpx", "httpcore.http11", "mangum.http", "uvicorn.error"]
        get = lambda n: logging.getLogger() if n == "root" else logging.getLogger(n)
        print(json.dumps({n: get(n).getEffectiveLevel() for n in names}))
        """,
        LOG_LEVEL=level,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    levels = json.loads(done.stdout.splitlines()[-1])
    wanted = logging.getLevelNamesMapping()[level]
    for name in ("core.sessions.dynamodb", "handlers.app", "sse_chat_agent"):
        assert levels[name] == wanted, name
    assert levels["root"] == logging.WARNING
    for name, effective in levels.items():
        if name.split(".")[0] in QUIET_LOGGERS:
            assert effective >= logging.WARNING, f"{name} would log below WARNING"


def test_uvicorn_never_goes_below_info_and_keeps_its_access_log_off() -> None:
    assert uvicorn_options(Settings(log_level="DEBUG"))["log_level"] == logging.INFO
    assert uvicorn_options(Settings(log_level="ERROR"))["log_level"] == logging.ERROR
    assert uvicorn_options(Settings(log_level="DEBUG"))["access_log"] is False


def test_every_line_is_redacted_and_libraries_print_no_debug() -> None:
    """GIVEN the app built at DEBUG with a key and AWS credentials in the environment
    WHEN the project, a library and uvicorn log lines holding them (and botocore logs DEBUG)
    THEN the output holds no 8 characters of either, and no library DEBUG line."""
    done = child(
        f"""
        import logging
        from handlers.app import create_app
        create_app()
        logging.getLogger("core.x").debug("project debug: key=%s", {KEY!r})
        logging.getLogger("handlers.y").warning("echo: test-{KEY[3:]}")
        logging.getLogger("botocore.endpoint").debug("LIBRARY-DEBUG body {AWS_SECRET}")
        logging.getLogger("botocore.credentials").warning("creds {AWS_SECRET}")
        logging.getLogger("uvicorn.error").error("uvicorn {KEY}")
        try:
            raise RuntimeError("boom {KEY}")
        except RuntimeError:
            logging.getLogger("sse_chat_agent").exception("failed")
        """,
        LOG_LEVEL="DEBUG",
        OPENAI_API_KEY=KEY,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "project debug: key=[redacted]" in output
    assert "echo: test-[redacted]" in output
    assert "creds [redacted]" in output
    assert "RuntimeError: boom [redacted]" in output
    assert "LIBRARY-DEBUG" not in output
    for secret in (KEY, AWS_SECRET):
        for i in range(len(secret) - 7):
            assert secret[i : i + 8] not in output, output
