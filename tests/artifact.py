"""The Lambda artifact off Lambda: built by src/Makefile, run by a Python 3.13 like the runtime's.

Shared by tests/integration/test_sam_build.py and bench/run.py (cold start, artifact size).
"""

from __future__ import annotations

import os
import platform
import struct
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = ROOT / "src" / "Makefile"
SAM_PYTHON_VERSION = os.environ.get("SAM_PYTHON_VERSION", "3.13.0")
HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine().lower(), platform.machine()
)
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z: every file's time in the zip `sam deploy` uploads


def build_env() -> dict[str, str]:
    """This environment for sam and make, minus an enclosing make's variables (`make test`)."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    return inherited | {"PYENV_VERSION": SAM_PYTHON_VERSION, "SAM_CLI_TELEMETRY": "0"}


def python313() -> str | None:
    """The real path of a Python 3.13 on PATH (pyenv shim resolved), or None."""
    try:
        out = subprocess.run(
            ["python3.13", "-c", "import sys; print(sys.executable, sys.version_info[:2])"],
            env=build_env(),
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


def template_arch() -> str:
    """template.yaml's `Architectures`, as src/Makefile reads it."""
    return make("print-arch", cwd=ROOT / "src").strip()


def make(*args: str, cwd: Path, timeout: float = 480) -> str:
    """`make -f src/Makefile ARGS` in `cwd`; its output, or AssertionError with it."""
    run = subprocess.run(
        ["make", "--no-print-directory", "-f", str(MAKEFILE), *args],
        cwd=cwd,
        env=build_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, (
        f"make {' '.join(args)} failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
    )
    return run.stdout


def build_artifact(
    dest: Path, *, arch: str = HOST_ARCH, code_dir: Path = ROOT / "src", **variables: str
) -> Path:
    """The same recipe `sam build` runs, here for `arch` (a local artifact, not for deploying)."""
    overrides = [f"{name}={value}" for name, value in variables.items()]
    make("build-ChatFunction", f"ARTIFACTS_DIR={dest}", f"ARCH={arch}", *overrides, cwd=code_dir)
    return dest


def runtime_python(dest: Path) -> Path:
    """A bare Python 3.13 with what the Lambda runtime adds (boto3 and its dependencies).

    `python -m venv --without-pip`, then the runtime's SDK into its site-packages, as Lambda's
    interpreter has it; the artifact must bring everything else. Returns the venv's bin/.
    """
    interpreter = python313()
    assert interpreter is not None, "python3.13 not found"
    subprocess.run([interpreter, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=60)
    (site,) = (dest / "lib").glob("python3.13/site-packages")
    make("runtime-sdk", f"DIR={site}", f"ARCH={HOST_ARCH}", cwd=ROOT / "src")
    return dest / "bin"


def as_deployed(artifact: Path) -> None:
    """Every file stamped 1980-01-01, as in the zip Lambda unpacks (timestamp .pyc go stale)."""
    for path in artifact.rglob("*"):
        os.utime(path, (ZIP_EPOCH, ZIP_EPOCH), follow_symlinks=False)


def snapshot(artifact: Path) -> dict[str, tuple[int, int]]:
    """Path -> (size, mtime): on Lambda the code is read-only, so nothing may change in it."""
    return {
        str(p.relative_to(artifact)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in artifact.rglob("*")
        if p.is_file()
    }


def zipped_bytes(artifact: Path, out: Path) -> int:
    """The artifact zipped as `sam deploy` zips it (deflate, every file), in bytes."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(artifact.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(artifact))
    return out.stat().st_size


def unzipped_bytes(artifact: Path) -> int:
    return sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())


def elf_section_names(path: Path) -> list[str]:
    """Section names of a 64-bit little-endian ELF file (both Lambda CPUs)."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"not ELF64 LE: {path}"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset = headers[shstrndx][4]
    names = []
    for name_offset, *_ in headers:
        start = strtab_offset + name_offset
        names.append(data[start : data.index(b"\0", start)].decode())
    return names
