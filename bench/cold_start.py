"""Cold start of the deployable artifact against a minimal FastAPI app, built and started alike.

Both are built by src/Makefile (the recipe `sam build` runs: locked wheels, precompiled
bytecode) for this machine's CPU and stamped 1980-01-01 like the zip Lambda unpacks. Each run
starts `run.sh` as the Lambda Web Adapter does: a bare Python 3.13 venv (`--without-pip`) plus
the runtime's boto3, the template's environment with Lambda's own variables, DynamoDB in moto,
the code directory mounted read-only when `unshare` allows it. Timed from just before the
process starts: `/healthz` answering 200 (the adapter's readiness check, polled every 2 ms),
then the first body byte of `GET /chat?prompt=hello`. The two apps take turns; medians.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "bench" / "hello"
READY_TIMEOUT_S = 30.0
POLL_S = 0.002
TARGET_FIRST_BYTE_RATIO = 1.3
TARGET_ZIPPED_MB = 10.0
MB = 1_000_000  # decimal megabytes: the stricter reading of "10 MB"


def _read_only_launcher() -> list[str]:
    """`unshare` + a read-only bind mount of the code, if this machine allows it (root)."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0 or not shutil.which("mount"):
        return []
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && cd "$0" && exec ./run.sh'
    return ["unshare", "-m", "sh", "-c", script]


def _get(port: int, path: str, timeout: float) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("GET", path)
    return connection.getresponse()


def _healthy(port: int) -> bool:
    with _get(port, "/healthz", timeout=1) as response:
        response.read()
        return response.status == 200


def _cpu_ms(pid: int) -> float:
    """CPU time the process has run, ms (/proc/<pid>/schedstat, nanoseconds): unlike wall
    time, not stretched while the machine runs something else."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


def _start_once(
    task_root: Path, env: dict[str, str], port: int, launcher: list[str], log: Path
) -> tuple[float, float, float]:
    """(ready ms, first SSE byte ms), both from just before the process starts, and the CPU
    time the server process had used at the first byte (the launcher execs into it)."""
    run_env = env | {"AWS_LWA_PORT": str(port), "LAMBDA_TASK_ROOT": str(task_root)}
    command = [*launcher, str(task_root)] if launcher else [str(task_root / "run.sh")]
    with log.open("ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=task_root, env=run_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        ready = None
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if process.poll() is not None:
                raise RuntimeError(f"{task_root.name}: run.sh exited {process.returncode}; {log}")
            try:
                if _healthy(port):
                    ready = time.perf_counter()
                    break
            except OSError:
                time.sleep(POLL_S)
        if ready is None:
            raise RuntimeError(f"{task_root.name}: not ready in {READY_TIMEOUT_S} s; {log}")
        with _get(port, "/chat?prompt=hello", timeout=10) as response:
            first = response.read(1)
            first_byte = time.perf_counter()
            cpu = _cpu_ms(process.pid)
            if response.status != 200 or not first:
                raise RuntimeError(f"{task_root.name}: /chat answered {response.status}; {log}")
            response.read()
        return (ready - started) * 1000, (first_byte - started) * 1000, cpu
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _import_profile(log: Path) -> dict[str, float]:
    """ms per top-level package imported at startup, from `-X importtime` lines in `log`."""
    totals: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith("  ") or not cumulative.strip().isdigit():
            continue  # nested (counted in its parent) or the header
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(cumulative) / 1000
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return {name: round(ms, 1) for name, ms in ranked if ms >= 5}


def _timed(action: Callable[[], Any]) -> float:
    began = time.monotonic()
    action()
    return round(time.monotonic() - began, 1)


def measure(runs: int) -> dict[str, Any]:
    """`cold_start_ms` and `artifact_mb` (DESIGN section 7), plus how they were measured."""
    # The tests' helpers: the same build, runtime Python and Lambda-like environment they check.
    from tests.artifact import (
        HOST_ARCH,
        as_deployed,
        build_artifact,
        runtime_python,
        snapshot,
        template_arch,
        unzipped_bytes,
        zipped_bytes,
    )
    from tests.conftest import free_port
    from tests.integration.lambda_process import lambda_like_environment

    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        deployed_arch = template_arch()
        apps = {"project": work / "project", "hello": work / "hello"}
        print(f"  building the artifacts ({HOST_ARCH})", flush=True)
        build_s = {
            "project": _timed(lambda: build_artifact(apps["project"])),
            "hello": _timed(
                lambda: build_artifact(
                    apps["hello"],
                    code_dir=HELLO,
                    APP_CODE="hello.py run.sh",
                    LOCK=str(HELLO / "requirements.txt"),
                )
            ),
        }
        deployed = apps["project"]
        if deployed_arch != HOST_ARCH:
            deployed = work / "deployed"
            build_s["project_" + deployed_arch] = _timed(
                lambda: build_artifact(deployed, arch=deployed_arch)
            )
        artifact_mb = {
            "zipped": round(zipped_bytes(deployed, work / "project.zip") / MB, 2),
            "unzipped": round(unzipped_bytes(deployed) / MB, 2),
            "architecture": deployed_arch,
            "hello_zipped": round(zipped_bytes(apps["hello"], work / "hello.zip") / MB, 2),
            "hello_unzipped": round(unzipped_bytes(apps["hello"]) / MB, 2),
        }
        for task_root in apps.values():
            as_deployed(task_root)
        before = {name: snapshot(path) for name, path in apps.items()}
        python_bin = runtime_python(work / "python3.13")
        env = lambda_like_environment(python_bin) | {
            # Set by Lambda itself; the app warms its clients at init when it sees them.
            "AWS_LAMBDA_FUNCTION_NAME": "sse-chat-agent-dev-ChatFunction",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        launcher = _read_only_launcher()
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in apps}
        for run in range(runs):
            for name, task_root in apps.items():
                samples[name].append(
                    _start_once(task_root, env, free_port(), launcher, work / f"{name}.log")
                )
            print(f"  cold start run {run + 1}/{runs}", flush=True)
        unchanged = all(snapshot(path) == before[name] for name, path in apps.items())
        # One more start each, untimed, with -X importtime: where the difference goes.
        imports = {}
        for name, task_root in apps.items():
            log = work / f"{name}-imports.log"
            profile_env = env | {"PYTHONPROFILEIMPORTTIME": "1"}
            _start_once(task_root, profile_env, free_port(), launcher, log)
            imports[name] = _import_profile(log)

        def median(name: str, index: int) -> float:
            return round(statistics.median(s[index] for s in samples[name]), 1)

        cold = {
            "ready": median("project", 0),
            "first_byte": median("project", 1),
            "hello_ready": median("hello", 0),
            "hello_first_byte": median("hello", 1),
        }
        cold["first_byte_ratio"] = round(cold["first_byte"] / cold["hello_first_byte"], 2)
        cpu = {"first_byte": median("project", 2), "hello_first_byte": median("hello", 2)}
        cpu["ratio"] = round(cpu["first_byte"] / cpu["hello_first_byte"], 2)
        return {
            "cold_start_ms": cold,
            "artifact_mb": artifact_mb,
            "cold_start": {
                "runs": runs,
                "samples_ms": {  # [ready, first byte, CPU ms at the first byte] per run
                    k: [[round(x, 1) for x in sample] for sample in v] for k, v in samples.items()
                },
                "cpu_to_first_byte_ms": cpu,
                "build_s": build_s,
                "architecture": HOST_ARCH,
                "read_only_code": "bind mount" if launcher else "no (PYTHONDONTWRITEBYTECODE=1)",
                "artifacts_unchanged_by_runs": unchanged,
                "startup_imports_ms": imports,
                "python": subprocess.run(
                    [str(python_bin / "python"), "--version"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip(),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def targets(results: dict[str, Any]) -> dict[str, bool]:
    cold, size = results["cold_start_ms"], results["artifact_mb"]
    return {
        "cold_start_first_byte": cold["first_byte"]
        <= TARGET_FIRST_BYTE_RATIO * cold["hello_first_byte"],
        "artifact_zipped": size["zipped"] <= TARGET_ZIPPED_MB,
    }


def table(results: dict[str, Any]) -> list[str]:
    cold, size, how = results["cold_start_ms"], results["artifact_mb"], results["cold_start"]
    cpu = how["cpu_to_first_byte_ms"]
    met = targets(results)

    def mark(key: str) -> str:
        return "met" if met[key] else "MISSED"

    return [
        f"| Cold start (median of {how['runs']}, {how['architecture']}) "
        "| /healthz ready (ms) | first SSE byte (ms) |",
        "|---|---|---|",
        f"| this project's artifact | {cold['ready']:.0f} | {cold['first_byte']:.0f} |",
        f"| minimal FastAPI app, same build | {cold['hello_ready']:.0f} | "
        f"{cold['hello_first_byte']:.0f} |",
        f"| ratio (target <= {TARGET_FIRST_BYTE_RATIO}x: {mark('cold_start_first_byte')}) | "
        f"{cold['ready'] / cold['hello_ready']:.2f}x | {cold['first_byte_ratio']:.2f}x |",
        "",
        f"CPU time to the first byte (steadier than wall time on a shared machine): project "
        f"{cpu['first_byte']:.0f} ms, hello {cpu['hello_first_byte']:.0f} ms, {cpu['ratio']:.2f}x.",
        "",
        f"Artifact ({size['architecture']}): {size['zipped']:.2f} MB zipped "
        f"(target <= {TARGET_ZIPPED_MB:.0f}: {mark('artifact_zipped')}), "
        f"{size['unzipped']:.2f} MB unzipped; hello {size['hello_zipped']:.2f} / "
        f"{size['hello_unzipped']:.2f} MB. Builds: {how['build_s']} s. "
        f"Read-only code: {how['read_only_code']}; artifacts unchanged by the runs: "
        f"{how['artifacts_unchanged_by_runs']}.",
        "",
        "Imports at startup, ms per top-level package (one extra run with -X importtime):",
        *(
            f"  {name}: " + ", ".join(f"{k} {v:.0f}" for k, v in profile.items())
            for name, profile in how["startup_imports_ms"].items()
        ),
    ]


if __name__ == "__main__":
    sys.exit("run `python -m bench.run --only cold-start`")
