"""`sam build` makes a deployable artifact, and that artifact streams a turn.

Needs the tools venv (`make tools`: aws-sam-cli) and Python 3.13 (`PYENV_VERSION=3.13.0` here),
plus PyPI for the dependencies. Without them the tests skip, loudly; with REQUIRE_SAM=1 or in CI
(CI=true) they fail instead, so CI can never pass by skipping.

Two builds run side by side: arm64 (the default and production architecture) and, when the host
is not arm64, the host's own architecture, whose artifact is then started with a bare
Python 3.13 to prove it carries everything the app imports.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.integration.lambda_process import (
    ROOT,
    RunSh,
    assert_clean_shutdown,
    exercise,
    lambda_like_environment,
)

pytestmark = pytest.mark.timeout(600)

TOOLS_BIN = ROOT / ".venv-tools" / "bin"
SAM = TOOLS_BIN / "sam"
SAM_PYTHON_VERSION = os.environ.get("SAM_PYTHON_VERSION", "3.13.0")
REQUIRED = os.environ.get("REQUIRE_SAM") == "1" or os.environ.get("CI") == "true"
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower(), platform.machine()
)
ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64
BUILD_TIMEOUT_SECONDS = 480


def tools_env() -> dict[str, str]:
    return os.environ | {"PYENV_VERSION": SAM_PYTHON_VERSION, "SAM_CLI_TELEMETRY": "0"}


def python313() -> str | None:
    """The real path of a Python 3.13 on PATH (pyenv shim resolved), or None."""
    try:
        out = subprocess.run(
            ["python3.13", "-c", "import sys; print(sys.executable, sys.version_info[:2])"],
            env=tools_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or "(3, 13)" not in out.stdout:
        return None
    return out.stdout.split()[0]


def require(what: str, present: bool) -> None:
    if present:
        return
    message = (
        f"NOT TESTED: sam build: {what} (run `make tools`; sam build needs python3.13 on PATH)"
    )
    if REQUIRED:
        pytest.fail(f"{message}; REQUIRE_SAM=1 or CI=true forbids skipping")
    pytest.skip(message)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Architecture -> build directory, from concurrent `sam build` runs (samconfig.toml read)."""
    require(f"{SAM} is missing", SAM.exists())
    require(f"python3.13 not found (PYENV_VERSION={SAM_PYTHON_VERSION})", python313() is not None)
    root = tmp_path_factory.mktemp("sam")
    started = time.monotonic()
    runs: dict[str, subprocess.Popen[str]] = {}
    for arch in sorted({"arm64", HOST_ARCH}):
        runs[arch] = subprocess.Popen(
            [
                str(SAM),
                "build",
                "--build-dir",
                str(root / arch / "build"),
                # Not incremental: cached builds share .aws-sam/deps in the project, and two
                # at once delete each other's dependency folders.
                "--no-cached",
                "--parameter-overrides",
                f"Architecture={arch}",
            ],
            cwd=ROOT,
            env=tools_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for arch, run in runs.items():
        output, _ = run.communicate(timeout=BUILD_TIMEOUT_SECONDS)
        assert run.returncode == 0, f"sam build ({arch}) failed:\n{output[-4000:]}"
    print(f"sam build {sorted(runs)}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return {arch: root / arch / "build" for arch in runs}


@pytest.mark.parametrize("arch", sorted({"arm64", HOST_ARCH}))
def test_artifact_holds_run_sh_the_page_the_code_and_the_dependencies(
    builds: dict[str, Path], arch: str
) -> None:
    function = builds[arch] / "ChatFunction"
    run_sh = function / "run.sh"
    assert run_sh.is_file()
    assert run_sh.stat().st_mode & 0o111 == 0o111, "run.sh lost its run bit in the artifact"
    assert (function / "handlers" / "static" / "index.html").is_file()
    assert (function / "handlers" / "static" / "main.js").is_file()
    assert (function / "handlers" / "static" / "vendor" / "marked" / "marked.esm.js").is_file()
    assert (function / "handlers" / "app.py").is_file()
    assert (function / "core" / "settings.py").is_file()
    for package in ("fastapi", "uvicorn", "mangum", "pydantic", "pydantic_core", "httpx_sse"):
        assert (function / package / "__init__.py").is_file(), f"{package} not installed"
    for stray in ("tests", ".venv", ".venv-tools", "events"):
        assert not (function / stray).exists(), f"{stray}/ does not belong in the artifact"


@pytest.mark.parametrize("arch", sorted({"arm64", HOST_ARCH}))
def test_native_code_matches_the_architecture(builds: dict[str, Path], arch: str) -> None:
    """pydantic-core is compiled: the wheel must be for Lambda's CPU, not the build host's."""
    (extension,) = (builds[arch] / "ChatFunction" / "pydantic_core").glob("_pydantic_core*.so")
    assert ".cpython-313-" in extension.name, "built for another Python than the runtime"
    header = extension.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]


def test_built_template_points_at_the_artifact(builds: dict[str, Path]) -> None:
    # sam build writes intrinsics in their long form (Fn::If), so plain YAML reads it.
    built = yaml.safe_load((builds["arm64"] / "template.yaml").read_text(encoding="utf-8"))
    function = built["Resources"]["ChatFunction"]["Properties"]
    assert function["CodeUri"] == "ChatFunction"
    assert function["Runtime"] == "python3.13"


def test_built_run_sh_streams_with_a_bare_python_3_13(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    """As on Lambda: the runtime's Python with nothing installed; the artifact brings the rest."""
    interpreter = python313()
    assert interpreter is not None
    bare = tmp_path / "python3.13"
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    env = lambda_like_environment(bare / "bin")
    version = subprocess.run(
        ["python", "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("Python 3.13"), version.stdout
    function = builds[HOST_ARCH] / "ChatFunction"
    with RunSh(function, free_port(), env, tmp_path / "run.log") as server:
        exercise(server)
        assert_clean_shutdown(server)


_RESOLVE = """
import json, sys
from samcli.lib.providers.sam_function_provider import SamFunctionProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
overrides = dict(arg.split("=", 1) for arg in sys.argv[1:])
stacks, _ = SamLocalStackProvider.get_stacks("template.yaml", parameter_overrides=overrides)
function = SamFunctionProvider(stacks).get("ChatFunction")
print(json.dumps({"handler": function.handler, "runtime": function.runtime,
                  "layers": [layer.arn for layer in function.layers]}))
"""


def sam_local_view(*overrides: str) -> dict[str, Any]:
    """The function as `sam local invoke` resolves it (SAM CLI's own provider, no Docker)."""
    require(f"{SAM} is missing", SAM.exists())
    out = subprocess.run(
        [str(TOOLS_BIN / "python"), "-c", _RESOLVE, *overrides],
        cwd=ROOT,
        env=tools_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"SAM CLI's provider API changed? {out.stderr[-2000:]}"
    view: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return view


def test_sam_local_invoke_sees_the_mangum_handler_without_layers() -> None:
    """`sam local invoke ChatFunction --parameter-overrides Streaming=false` (needs Docker)."""
    assert sam_local_view("Streaming=false") == {
        "handler": "handlers.app.handler",
        "runtime": "python3.13",
        "layers": [],
    }
    assert sam_local_view()["handler"] == "run.sh"
