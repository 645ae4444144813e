"""run.sh, started as the Lambda Web Adapter starts it, streams a turn over HTTP.

Source-directory run: LAMBDA_TASK_ROOT = src/, the app's venv Python on PATH, the template's
streaming environment (DynamoDB sessions in a moto server on loopback, table built from the
template, no key so the built-in simulator answers). tests/integration/test_sam_build.py runs
the same against the built artifact with a bare Python 3.13.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import free_port
from tests.integration.lambda_process import (
    ROOT,
    RunSh,
    assert_clean_shutdown,
    exercise,
    lambda_like_environment,
)


def test_run_sh_from_source_streams_a_turn(tmp_path: Path) -> None:
    env = lambda_like_environment(Path(sys.executable).parent)
    assert env["SESSION_STORE"] == "dynamodb" and env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    with RunSh(ROOT / "src", free_port(), env, tmp_path / "run.log") as server:
        exercise(server)
        assert_clean_shutdown(server)
