"""`make bench`: measure what the relay adds between the model and the user, in one run.

The simulator (`python -m simulator`) and the app (`python -m handlers.serve`) run as
their own processes on 127.0.0.1. With `{"stamp": true}` every content chunk the simulator sends
is its `time.monotonic_ns()` at send time; CLOCK_MONOTONIC is system-wide on Linux, so the
client subtracts it from its own receive time. The same client reads the simulator directly
(the baseline) and through the app (relayed); the difference is the relay's cost.

The client is a raw `asyncio.Protocol` (hand-written on purpose): it timestamps bytes in
`data_received`, straight from the event loop's read callback, and its per-event work is one
regex over the received bytes, the same on both paths. httpx + httpx-sse would parse each
event into objects (tens of µs, more for the simulator's larger chunks), which would not cancel
exactly, and at 400 streams x 60 tokens/s the client itself would compete for the CPU.

On a machine with 2+ CPUs the app is pinned to CPU 1 and the simulator and this client to
CPU 0, so "one uvicorn worker" gets one core of its own and the others do not steal from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import cold_start
from bench.servers import HOST, ROOT, Server, Servers, app_env, http, wait_ready

RESULTS = ROOT / "bench" / "results" / "latest.json"
COLD_RESULTS = ROOT / "bench" / "results" / "cold-start.json"
STAMP = re.compile(rb'"(\d+) "')
SESSION = re.compile(
    rb'"session": "([A-Za-z0-9_-]{22})"'
)  # in the `started` event  # a stamp token, in `"content":"…"` and in `"token": "…"`
RELAY_END = b'"lifecycle": "done"'
DIRECT_END = b"data: [DONE]"
MS = 1_000_000  # ns per ms
SKIP_FIRST = 5  # tokens per stream left out of latency figures (connection warm-up)

# DESIGN §7 yardsticks.
TARGET_OVERHEAD_P50_MS = 0.2
TARGET_OVERHEAD_P99_MS = 1.0
TARGET_STREAMS = 200
TARGET_ADDED_P99_MS = 10.0
TARGET_KB_PER_STREAM = 100.0
TARGET_IMPORT_RATIO = 1.5
TARGET_RESUME_LAG_P95_MS = 1000.0

_APP_CPU = 1
_SIDE_CPU = 0


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns runnable but waiting) of a process's main thread."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu), int(waiting)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- the client ---------------------------------------------------------------------------------


class Stream(asyncio.Protocol):
    """One SSE response read off a raw socket: token latencies against the simulator's stamps."""

    def __init__(self, request: bytes, end_marker: bytes) -> None:
        self.request = request
        self.end_marker = end_marker
        self.buffer = bytearray()
        self.status: bytes | None = None
        self.latencies: list[int] = []  # ns, receive time - stamp, per token
        self.received: list[int] = []  # ns, receive time, per token
        self.complete = False
        self.error: str | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.session: str | None = None  # from the `started` event, when relayed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer
        buffer += data
        if self.status is None and len(buffer) >= 12:
            self.status = bytes(buffer[9:12])
        end = buffer.rfind(b"\n\n")
        if end < 0:
            return
        events = bytes(buffer[:end])
        del buffer[: end + 2]
        if self.session is None and (found := SESSION.search(events)):
            self.session = found.group(1).decode()
        for match in STAMP.finditer(events):
            self.latencies.append(now - int(match.group(1)))
            self.received.append(now)
        if self.end_marker in events:
            self.complete = True

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = type(exc).__name__
        if not self.closed.done():
            self.closed.set_result(None)

    def failed(self, expected_tokens: int) -> bool:
        return (
            self.error is not None
            or self.status != b"200"
            or not self.complete
            or len(self.latencies) != expected_tokens
        )


def relay_request(port: int) -> bytes:
    return (
        f"GET /chat?prompt=bench HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()


def direct_request(port: int) -> bytes:
    """What the app itself sends upstream (stream + include_usage), straight to the simulator."""
    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": "bench"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 1024,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer bench\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def open_stream(
    port: int,
    request: bytes,
    end: bytes,
    start_in: float,
    timeout: float,
    opened: list[Stream] | None = None,
) -> Stream:
    await asyncio.sleep(start_in)
    loop = asyncio.get_running_loop()
    stream = Stream(request, end)
    if opened is not None:
        opened.append(stream)
    try:
        await loop.create_connection(lambda: stream, HOST, port)
    except OSError as exc:
        stream.error = f"connect: {type(exc).__name__}"
        return stream
    try:
        await asyncio.wait_for(asyncio.shield(stream.closed), timeout)
    except TimeoutError:
        stream.error = "timeout"
        if stream.transport is not None:
            stream.transport.abort()
    except asyncio.CancelledError:
        if stream.transport is not None:
            stream.transport.abort()
        raise
    return stream


@dataclass
class Run:
    """N streams on one path."""

    streams: list[Stream]
    expected: int
    started_ns: int
    ended_ns: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(s.failed(self.expected) for s in self.streams)

    def steady_latencies(self) -> list[int]:
        """Latencies while every stream was open (after the last first token, before the first
        last token), each stream's first tokens left out; all of them if that window is empty."""
        alive = [s for s in self.streams if len(s.received) > SKIP_FIRST]
        if not alive:
            return []
        start = max(s.received[SKIP_FIRST] for s in alive)
        end = min(s.received[-1] for s in alive)
        window = [
            lat
            for s in alive
            for lat, at in zip(s.latencies[SKIP_FIRST:], s.received[SKIP_FIRST:], strict=True)
            if start <= at <= end
        ]
        if len(window) >= len(alive):
            return window
        return [lat for s in alive for lat in s.latencies[SKIP_FIRST:]]

    def rate_each(self) -> float:
        """Median achieved tokens/s per stream, first to last token."""
        rates = [
            (len(s.received) - 1) / ((s.received[-1] - s.received[0]) / 1e9)
            for s in self.streams
            if len(s.received) > 1 and s.received[-1] > s.received[0]
        ]
        return statistics.median(rates) if rates else 0.0


class CpuSampler:
    """Samples processes' main-thread scheduler stats every 100 ms, for CPU% over a window.

    /proc/<pid>/schedstat: time on a CPU and time runnable but waiting for one (ns). The wait
    shows when something else on the machine took the app's CPU (this box may be shared).
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.samples: list[tuple[int, dict[str, tuple[int, int]]]] = []

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.1)

    def sample(self) -> None:
        self.samples.append((time.monotonic_ns(), {n: schedstat(p) for n, p in self.pids.items()}))

    def percent(self, start_ns: int, end_ns: int) -> dict[str, float]:
        """{"<name>": CPU%, "<name>_wait": runnable-but-waiting %} between two instants."""
        inside = [s for s in self.samples if start_ns <= s[0] <= end_ns]
        if len(inside) < 2:
            inside = self.samples[:1] + self.samples[-1:]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return {}
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        elapsed = t1 - t0
        shares = {}
        for name in self.pids:
            shares[name] = round(100 * (c1[name][0] - c0[name][0]) / elapsed, 1)
            shares[f"{name}_wait"] = round(100 * (c1[name][1] - c0[name][1]) / elapsed, 1)
        return shares


class Bench:
    def __init__(self, sim: Server, app: Server) -> None:
        self.sim = sim
        self.app = app

    def script(self, reply: dict[str, Any]) -> None:
        http("POST", self.sim.port, "/_sim/reset", {})
        http("POST", self.sim.port, "/_sim/script", [reply])

    async def run(
        self,
        *,
        relayed: bool,
        streams: int,
        count: int,
        delay_ms: float,
        ramp_s: float,
        timeout: float,
        sample_cpu: bool = False,
    ) -> Run:
        """`streams` concurrent streams of `count` stamped tokens, started over `ramp_s`."""
        self.script({"stamp": True, "count": count, "delay_ms": delay_ms, "times": streams})
        if relayed:
            port, request, end = self.app.port, relay_request(self.app.port), RELAY_END
        else:
            port, request, end = self.sim.port, direct_request(self.sim.port), DIRECT_END
        rng = random.Random(streams)
        starts = sorted(rng.uniform(0, ramp_s) for _ in range(streams)) if streams > 1 else [0.0]
        sampler = CpuSampler({"app": self.app.pid, "simulator": self.sim.pid})
        sampling = asyncio.create_task(sampler.run()) if sample_cpu else None
        started = time.monotonic_ns()
        try:
            opened = await asyncio.gather(
                *(open_stream(port, request, end, s, timeout) for s in starts)
            )
        finally:
            if sampling is not None:
                sampling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampling
        run = Run(list(opened), count, started, time.monotonic_ns())
        if sample_cpu:
            alive = [s for s in run.streams if len(s.received) > SKIP_FIRST]
            if alive:
                window = (
                    max(s.received[SKIP_FIRST] for s in alive),
                    min(s.received[-1] for s in alive),
                )
                run.cpu = sampler.percent(*window)
        return run


# --- statistics ---------------------------------------------------------------------------------


def pct(values: Sequence[int], q: float) -> float:
    """The q-th percentile (nearest rank) of ns values, in ms."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] / MS


def r3(value: float) -> float:
    return round(value, 3)


# --- the five measurements ----------------------------------------------------------------------


async def measure_overhead(
    bench: Bench, tokens: int, rounds: int, pace_ms: float
) -> dict[str, Any]:
    """(a) One paced stream at a time, direct and relayed interleaved: per-token latency."""
    direct: list[int] = []
    relayed: list[int] = []
    errors = 0
    waits = []
    for _ in range(rounds):
        for is_relayed, into in ((False, direct), (True, relayed)):
            run = await bench.run(
                relayed=is_relayed,
                streams=1,
                count=tokens,
                delay_ms=pace_ms,
                ramp_s=0,
                timeout=tokens * pace_ms / 1000 + 30,
                sample_cpu=True,
            )
            errors += run.errors
            into.extend(lat for s in run.streams for lat in s.latencies[SKIP_FIRST:])
            if is_relayed:
                waits.append(run.cpu.get("app_wait", 0.0))
    return {
        "p50": r3(pct(relayed, 50) - pct(direct, 50)),
        "p99": r3(pct(relayed, 99) - pct(direct, 99)),
        "relayed": {"p50": r3(pct(relayed, 50)), "p99": r3(pct(relayed, 99))},
        "direct": {"p50": r3(pct(direct, 50)), "p99": r3(pct(direct, 99))},
        "tokens_per_path": len(relayed),
        "pace_ms": pace_ms,
        "errors": errors,
        "app_cpu_wait_percent": round(max(waits), 1),
    }


async def measure_throughput(bench: Bench, tokens: int, rounds: int) -> dict[str, Any]:
    """(b) One stream, instant upstream (delay 0): tokens/s, median of `rounds`."""
    rates: dict[str, list[float]] = {"relayed": [], "direct": []}
    cpu: list[float] = []
    errors = 0
    for _ in range(rounds):
        for name in ("direct", "relayed"):
            run = await bench.run(
                relayed=name == "relayed",
                streams=1,
                count=tokens,
                delay_ms=0,
                ramp_s=0,
                timeout=60,
                sample_cpu=True,
            )
            errors += run.errors
            rates[name].append(run.rate_each())
            if name == "relayed":
                cpu.append(run.cpu.get("app", 0.0))
    return {
        "relayed": round(statistics.median(rates["relayed"])),
        "direct": round(statistics.median(rates["direct"])),
        "tokens": tokens,
        "errors": errors,
        "app_cpu_percent": round(statistics.median(cpu), 1),
        "app_cpu_us_per_token": round(
            statistics.median(cpu) * 1e4 / statistics.median(rates["relayed"])
        ),
    }


async def measure_memory(bench: Bench, streams: int) -> dict[str, Any]:
    """(d) App RSS idle, then with `streams` streams open end to end (the app holding each
    client response and each upstream response, tokens not yet due), then the streams dropped."""
    await asyncio.sleep(0.5)
    idle = statistics.median([rss_kb(bench.app.pid) for _ in range(5)])
    bench.script({"stamp": True, "count": 1, "delay_ms": 60_000, "times": streams})
    request = relay_request(bench.app.port)
    clients: list[Stream] = []
    tasks = [
        asyncio.create_task(
            open_stream(bench.app.port, request, RELAY_END, i * 0.002, 90, opened=clients)
        )
        for i in range(streams)
    ]
    opened = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        opened = upstream_open(bench)
        if opened >= streams:
            break
    await asyncio.sleep(0.3)
    loaded = statistics.median([rss_kb(bench.app.pid) for _ in range(5)])
    # A client that leaves does not end its turn (it is durable): Stop does, as the page's
    # button would. Otherwise 200 turns waiting a minute for a token would run on into the
    # next measurements.
    for stream in clients:
        if stream.session is not None:
            http("POST", bench.app.port, f"/sessions/{stream.session}/stop")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(75):  # the app closes its upstream responses in turn (15 s at most)
        if not upstream_open(bench):
            break
        await asyncio.sleep(0.2)
    return {
        "streams": streams,
        "streams_open_at_sample": opened,
        "idle_rss_kb": idle,
        "loaded_rss_kb": loaded,
        "kb_per_stream": round((loaded - idle) / streams, 1),
    }


def upstream_open(bench: Bench) -> int:
    """How many responses the simulator is streaming right now."""
    log = http("GET", bench.sim.port, "/_sim/log")
    return sum(1 for entry in log if entry["outcome"] == "open")


async def measure_concurrency(
    bench: Bench, levels: Sequence[int], rate: float, seconds: float, ramp_s: float
) -> list[dict[str, Any]]:
    """(c) N streams at `rate` tokens/s each, direct then relayed: added p99, errors, CPU."""
    results = []
    count = round(rate * seconds)
    delay_ms = 1000 / rate
    for streams in levels:
        runs = {}
        for name in ("direct", "relayed"):
            runs[name] = await bench.run(
                relayed=name == "relayed",
                streams=streams,
                count=count,
                delay_ms=delay_ms,
                ramp_s=ramp_s,
                timeout=ramp_s + seconds + 30,
                sample_cpu=True,
            )
        direct, relayed = runs["direct"].steady_latencies(), runs["relayed"].steady_latencies()
        achieved = runs["relayed"].rate_each()
        app_cpu = runs["relayed"].cpu.get("app")
        results.append(
            {
                "streams": streams,
                "tokens_per_s_each": round(rate),
                "achieved_tokens_per_s_each": round(achieved, 1),
                "added_p50_ms": r3(pct(relayed, 50) - pct(direct, 50)),
                "added_p99_ms": r3(pct(relayed, 99) - pct(direct, 99)),
                "relayed_p50_ms": r3(pct(relayed, 50)),
                "relayed_p99_ms": r3(pct(relayed, 99)),
                "direct_p50_ms": r3(pct(direct, 50)),
                "direct_p99_ms": r3(pct(direct, 99)),
                "errors": runs["relayed"].errors,
                "direct_errors": runs["direct"].errors,
                "app_cpu_percent": app_cpu,
                "app_cpu_us_per_token": (
                    round(app_cpu * 1e4 / (achieved * streams)) if app_cpu and achieved else None
                ),
                "app_cpu_wait_percent": runs["relayed"].cpu.get("app_wait"),
                "simulator_cpu_percent": runs["relayed"].cpu.get("simulator"),
                "samples": len(relayed),
            }
        )
        print(f"  concurrency {streams}: done", flush=True)
    return results


_IMPORT_PROBE = """
import sys, time
before = len(sys.modules)
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
after_import = len(sys.modules)
{build}
t2 = time.perf_counter()
print(repr(((t1 - t0) * 1000, (t2 - t1) * 1000, after_import - before, len(sys.modules) - before)))
"""


def measure_cold_import(env: dict[str, str], repeats: int) -> dict[str, Any]:
    """(e) Fresh interpreters, interleaved: `import fastapi`, `import handlers.app`, then
    `handlers.app.create_app()`; median of `repeats`, and how many modules each loads."""
    probes = {
        "fastapi": _IMPORT_PROBE.format(module="fastapi", build=""),
        "entry": _IMPORT_PROBE.format(module="handlers.app", build="handlers.app.create_app()"),
    }
    times: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in probes}
    for _ in range(repeats):
        for name, code in probes.items():
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            times[name].append(eval(out.stdout.strip().splitlines()[-1]))  # our own repr()

    def median(name: str, index: int) -> float:
        return statistics.median(t[index] for t in times[name])

    entry, fastapi = median("entry", 0), median("fastapi", 0)
    return {
        "entry": round(entry, 1),
        "fastapi": round(fastapi, 1),
        "ratio": round(entry / fastapi, 2),
        "app_build": round(median("entry", 1), 1),
        "entry_modules": int(median("entry", 2)),
        "fastapi_modules": int(median("fastapi", 2)),
        "app_build_modules": int(median("entry", 3) - median("entry", 2)),
        "repeats": repeats,
    }


# --- report -------------------------------------------------------------------------------------


def _serve_options() -> dict[str, object]:
    """The HTTP and loop implementations `python -m handlers.serve` runs with."""
    from core.settings import Settings
    from handlers.serve import uvicorn_options

    return uvicorn_options(Settings())


def machine(pinned: bool, variant: str) -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("fastapi", "starlette", "uvicorn", "httpx", "httpx-sse", "anyio", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "nproc": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "packages": versions,
        "server": (
            f"bench.variants {variant} (uvicorn, 1 worker)"
            if variant
            else "python -m handlers.serve (uvicorn, 1 worker, http={http}, loop={loop})".format(
                **_serve_options()
            )
        ),
        "pinning": (
            f"app on CPU {_APP_CPU}; simulator and client on CPU {_SIDE_CPU}"
            if pinned
            else "none (fewer than 2 CPUs, or --no-pin)"
        ),
    }


def targets(results: dict[str, Any]) -> dict[str, bool]:
    at_target = [c for c in results["concurrency"] if c["streams"] == TARGET_STREAMS]
    cold = results["cold_import_ms"]
    return (
        {
            "overhead_p50": results["overhead_ms"]["p50"] <= TARGET_OVERHEAD_P50_MS,
            "overhead_p99": results["overhead_ms"]["p99"] <= TARGET_OVERHEAD_P99_MS,
            "concurrency_200": bool(at_target)
            and at_target[0]["added_p99_ms"] <= TARGET_ADDED_P99_MS
            and at_target[0]["errors"] == 0,
            "memory_per_stream": results["memory_kb_per_stream"] <= TARGET_KB_PER_STREAM,
        }
        | ({"cold_import": cold["entry"] <= TARGET_IMPORT_RATIO * cold["fastapi"]} if cold else {})
        | {
            f"resume_lag_p95_{store}": lag["p95"] <= TARGET_RESUME_LAG_P95_MS
            for store, lag in (results.get("resume_lag_ms") or {}).items()
        }
    )


def table(results: dict[str, Any]) -> Iterator[str]:
    met = results["targets"]

    def mark(key: str) -> str:
        return "met" if met[key] else "MISSED"

    over, thr, mem, cold = (
        results["overhead_ms"],
        results["throughput_tokens_per_s"],
        results["memory"],
        results["cold_import_ms"],
    )
    yield "| Measure | Relayed | Direct | Relay adds | Target |"
    yield "|---|---|---|---|---|"
    yield (
        f"| a. latency per token p50 (ms) | {over['relayed']['p50']:.3f} | "
        f"{over['direct']['p50']:.3f} | {over['p50']:.3f} | <= 0.2 ({mark('overhead_p50')}) |"
    )
    yield (
        f"| a. latency per token p99 (ms) | {over['relayed']['p99']:.3f} | "
        f"{over['direct']['p99']:.3f} | {over['p99']:.3f} | <= 1 ({mark('overhead_p99')}) |"
    )
    yield (
        f"| b. single-stream throughput (tokens/s) | {thr['relayed']} | {thr['direct']} | "
        f"{thr['relayed'] / thr['direct']:.0%} of direct | - |"
    )
    for level in results["concurrency"]:
        target = (
            f"<= 10, 0 errors ({mark('concurrency_200')})"
            if level["streams"] == TARGET_STREAMS
            else "-"
        )
        yield (
            f"| c. {level['streams']} streams x {level['tokens_per_s_each']} tok/s: p99 ms "
            f"(errors, app CPU, app waiting for CPU) | {level['relayed_p99_ms']:.2f} "
            f"({level['errors']} err, {level['app_cpu_percent']}%, "
            f"{level['app_cpu_wait_percent']}%) | {level['direct_p99_ms']:.2f} "
            f"({level['direct_errors']} err) | {level['added_p99_ms']:.2f} | {target} |"
        )
    yield (
        f"| d. app RSS, {mem['streams']} open streams vs idle (KB) | {mem['loaded_rss_kb']:.0f} | "
        f"{mem['idle_rss_kb']:.0f} (idle) | {mem['kb_per_stream']:.1f} KB/stream | "
        f"<= 100 ({mark('memory_per_stream')}) |"
    )
    if cold:
        yield (
            f"| e. cold import (ms, modules) | entry {cold['entry']:.0f} "
            f"({cold['entry_modules']}) + app build {cold['app_build']:.0f} | fastapi "
            f"{cold['fastapi']:.0f} ({cold['fastapi_modules']}) | {cold['ratio']:.2f}x | "
            f"<= 1.5x ({mark('cold_import')}) |"
        )
    for store, lag in (results.get("resume_lag_ms") or {}).items():
        yield (
            f"| g. resume_lag_ms, produced on A -> seen on B ({store}) p50 / p95 | "
            f"{lag['p50']:.0f} / {lag['p95']:.0f} | - | - | p95 <= 1000 "
            f"({mark(f'resume_lag_p95_{store}')}) |"
        )


# --- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers_running(pinned: bool, variant: str = "") -> Iterator[tuple[Server, Server]]:
    """The simulator and the app, ready; stopped on the way out whatever happens."""
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-") as logs:
        servers = Servers(Path(logs))
        try:
            if pinned:
                os.sched_setaffinity(0, {_SIDE_CPU})
            sim = servers.start(
                "simulator",
                [python, "-m", "simulator", "--host", HOST, "--port", "{port}"],
                dict(os.environ, PYTHONUNBUFFERED="1"),
                _SIDE_CPU if pinned else None,
            )
            wait_ready(sim, "/v1/models")
            command = [python, "-m", "handlers.serve"]
            if variant:
                command = [python, "-m", "bench.variants", *shlex.split(variant)]
            app = servers.start("app", command, app_env(sim.port), _APP_CPU if pinned else None)
            wait_ready(app, "/healthz")
            yield sim, app
        except BaseException:
            for server in servers.running:
                print(f"--- {server.name} log (tail) ---\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            servers.stop_all()


async def warm_up(bench: Bench) -> None:
    """Imports, connection pool, first-request work: done before anything is timed."""
    for relayed in (False, True):
        await bench.run(relayed=relayed, streams=1, count=20, delay_ms=1, ramp_s=0, timeout=30)


async def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    await warm_up(bench)
    print("a. relay overhead per token", flush=True)
    overhead = await measure_overhead(bench, args.tokens, rounds=2, pace_ms=5.0)
    print("b. single-stream throughput", flush=True)
    throughput = await measure_throughput(bench, args.throughput_tokens, rounds=3)
    print("d. memory per open stream", flush=True)
    memory = await measure_memory(bench, args.memory_streams)
    print("c. concurrency", flush=True)
    concurrency = await measure_concurrency(
        bench, args.levels, rate=60.0, seconds=args.seconds, ramp_s=1.0
    )
    return {
        "overhead_ms": overhead,
        "throughput_tokens_per_s": throughput,
        "concurrency": concurrency,
        "memory_kb_per_stream": memory["kb_per_stream"],
        "memory": memory,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seconds", type=float, default=4.0, help="per concurrency run")
    parser.add_argument("--tokens", type=int, default=500, help="per overhead run")
    parser.add_argument("--throughput-tokens", type=int, default=5000)
    parser.add_argument("--memory-streams", type=int, default=200)
    parser.add_argument("--imports", type=int, default=5, help="cold import repeats (0: skip)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--resume-turns", type=int, default=3, help="turns per store for resume_lag_ms (0: skip)"
    )
    parser.add_argument(
        "--cold-starts", type=int, default=9, help="artifact cold start runs per app (0: skip)"
    )
    parser.add_argument(
        "--only",
        choices=["all", "cold-start"],
        default="all",
        help=f"cold-start: only the artifact's cold start and size (default output {COLD_RESULTS})",
    )
    parser.add_argument("--output", type=Path, default=None, help=f"default {RESULTS}")
    parser.add_argument(
        "--variant",
        default="",
        help='serve the app through bench.variants with these options, e.g. "--http httptools"',
    )
    return parser.parse_args(argv)


def can_pin(disabled: bool) -> bool:
    return not disabled and {_APP_CPU, _SIDE_CPU} <= os.sched_getaffinity(0)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if args.only == "cold-start":
        output = args.output or COLD_RESULTS
        print("f. artifact cold start and size", flush=True)
        results = cold_start.measure(max(args.cold_starts, 1))
        results["targets"] = cold_start.targets(results)
        results["machine"] = machine(False, "") | {"load_average_1m_at_start": load_at_start}
        results["duration_s"] = round(time.monotonic() - began, 1)
        _write(output, results)
        print("\n" + "\n".join(cold_start.table(results)) + f"\n\nWritten to {output}")
        return
    output = args.output or RESULTS
    pinned = can_pin(args.no_pin)
    print("e. cold import (fresh interpreters)", flush=True)
    cold = measure_cold_import(app_env(sim_port=9), args.imports) if args.imports else None
    with servers_running(pinned, args.variant) as (sim, app):
        results = asyncio.run(measure(Bench(sim, app), args))
    results["cold_import_ms"] = cold
    if args.resume_turns:
        from bench.resume import measure_resume_lag

        # After the relay runs, whose pinning it must not inherit.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        print("g. resume lag across processes (SQLite, moto)", flush=True)
        results["resume_lag_ms"] = measure_resume_lag(args.resume_turns)
    results["targets"] = targets(results)
    if args.cold_starts:
        # After the relay runs, whose pinning it must not inherit.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        print("f. artifact cold start and size", flush=True)
        results |= cold_start.measure(args.cold_starts)
        results["targets"] |= cold_start.targets(results)
    results["machine"] = machine(pinned, args.variant) | {"load_average_1m_at_start": load_at_start}
    results["duration_s"] = round(time.monotonic() - began, 1)
    _write(output, results)
    print()
    for line in table(results):
        print(line)
    if args.cold_starts:
        print("\n" + "\n".join(cold_start.table(results)))
    m = results["machine"]
    print(
        f"\n{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['server']}; "
        f"{m['pinning']}. {results['duration_s']} s. Written to {output}"
    )


def _write(output: Path, results: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
