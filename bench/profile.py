"""`python -m bench.profile`: py-spy samples of the app while it relays, summarised by owner.

Runs the same processes as `make bench`, attaches `py-spy record` (dev extra) to the app during
one relayed load, and prints where the app's CPU time goes: the hottest functions (self time)
and each sample charged to the code responsible for it, walking up from the leaf past the
standard library and shared parsers (h11, json) to the first frame of fastapi, anyio,
starlette, uvicorn, httpx/httpcore, httpx-sse, core or handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.run import Bench, can_pin, servers_running, warm_up

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")
# Shared helpers (py-spy's short paths start so): a sample in them is charged to the caller.
_PASS_THROUGH = (
    "h11/",
    "json/",
    "asyncio/",
    "re/",
    "selectors.py",
    "socket.py",
    "contextlib.py",
    "typing.py",
    "enum.py",
    "abc.py",
    "functools.py",
    "<",
)
_OWNERS = (
    ("fastapi/routing.py", "fastapi SSE path (fastapi/routing.py)"),
    ("fastapi/sse.py", "fastapi SSE path (fastapi/sse.py)"),
    ("fastapi/", "fastapi (other)"),
    ("anyio/streams/memory.py", "anyio memory streams"),
    ("anyio/", "anyio (cancel scopes, task groups, checkpoints)"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn (server side h11)"),
    ("httpx_sse/", "httpx-sse (upstream event parsing)"),
    ("httpcore/", "httpx/httpcore (upstream client)"),
    ("httpx/", "httpx/httpcore (upstream client)"),
    ("core/", "core (Turn.events, OpenAI adapter)"),
    ("handlers/", "handlers (app, to_sse)"),
    ("pydantic", "pydantic"),
)


def owner(stack: Sequence[str]) -> tuple[str, str]:
    """Who a sample is charged to, and the frame charged; `stack` is outermost first."""
    for frame in reversed(stack):
        match = _FRAME.match(frame)
        path = match.group("file") if match else frame
        if path.endswith(("asyncio/events.py", "asyncio/base_events.py")):
            break  # below the callback that the loop runs: the loop's own work
        if path.startswith(_PASS_THROUGH):
            continue
        for marker, name in _OWNERS:
            if marker in path:
                return name, frame
        return f"other ({path})", frame
    return "event loop (asyncio, selectors)", stack[-1]


def native_sse_machinery(stack: Sequence[str]) -> bool:
    """A sample inside FastAPI's per-event SSE plumbing rather than in the endpoint's generator."""
    names = [frame.split(" (", 1)[0] for frame in stack]
    if any(n.endswith(("._keepalive_inserter", "._sse_with_checkpoints")) for n in names):
        return True
    producer = [i for i, n in enumerate(names) if n.endswith("._producer")]
    return bool(producer) and not any("chat_get" in n for n in names[producer[0] + 1 :])


def summarise(raw: Path, top: int) -> list[str]:
    self_time: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    charged: dict[str, Counter[str]] = {}
    native_sse = 0
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [f for f in stack_text.split(";") if not f.startswith("process ")]
        stack = [f for f in stack if not f.startswith("thread ")]
        if not stack:
            continue
        total += count
        self_time[stack[-1]] += count
        if native_sse_machinery(stack):
            native_sse += count
        name, frame = owner(stack)
        owners[name] += count
        charged.setdefault(name, Counter())[frame] += count
    if not total:
        return ["no samples (is ptrace allowed?)"]
    lines = [f"{total} samples of the app while busy", "", "Charged to (self time, by owner):"]
    for name, count in owners.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
        for frame, share in charged[name].most_common(3):
            lines.append(f"           {100 * share / total:4.1f}%  {frame}")
    lines += [
        "",
        f"FastAPI's native SSE machinery, inclusive: {100 * native_sse / total:.1f}% "
        "(the keep-alive task, the checkpointing reader, the producer's sends; not counting "
        "the event loop's extra task switches)",
        "",
        f"Top {top} functions (self time):",
    ]
    for frame, count in self_time.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return lines


async def load(bench: Bench, args: argparse.Namespace, raw: Path) -> None:
    await warm_up(bench)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    seconds = args.seconds + 1.0
    spy = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(bench.app.pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nolineno",
        "--nonblocking",
        "--output",
        str(raw),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(0.5)  # py-spy attaches
        if args.mode == "throughput":
            runs = max(1, round(args.seconds * 2))
            for _ in range(runs):
                await bench.run(
                    relayed=True, streams=1, count=2000, delay_ms=0, ramp_s=0, timeout=60
                )
        else:
            await bench.run(
                relayed=True,
                streams=args.streams,
                count=round(60 * args.seconds),
                delay_ms=1000 / 60,
                ramp_s=0.5,
                timeout=args.seconds + 60,
            )
        _, err = await asyncio.wait_for(spy.communicate(), timeout=seconds + 30)
        if spy.returncode != 0:
            print(err.decode(errors="replace"), file=sys.stderr)
    finally:
        if spy.returncode is None:
            spy.kill()
            await spy.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["concurrency", "throughput"], default="concurrency")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--output", type=Path, help="also write the summary here")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        raw = args.raw or Path(tmp) / "app.raw"
        with servers_running(can_pin(args.no_pin)) as (sim, app):
            asyncio.run(load(Bench(sim, app), args, raw))
        what = (
            f"{args.streams} relayed streams x 60 tokens/s"
            if args.mode == "concurrency"
            else "one relayed stream, instant upstream"
        )
        lines = [f"py-spy profile of the app: {what}", *summarise(raw, args.top)]
    print("\n".join(lines))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
