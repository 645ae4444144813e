"""`python -m bench.variants`: the app served with one server option changed, to measure it.

Used by `python -m bench.run --variant ...` (never by `make bench`, which measures
`python -m handlers.serve` as shipped). `--http httptools` swaps uvicorn's h11 parser for its C
one (install it first: `.venv/bin/pip install --target /tmp/bench-extras httptools` and run with
`PYTHONPATH=/tmp/bench-extras`); `--loop asyncio` measures without uvloop.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from core.settings import Settings
from handlers.app import create_app
from handlers.serve import uvicorn_options


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--http", choices=["h11", "httptools"], default="h11")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args()
    settings = Settings()
    options = {**uvicorn_options(settings), "loop": args.loop}
    if args.http != "h11":  # h11 is the shipped protocol (with its request-head deadline)
        options["http"] = args.http
        options.pop("h11_max_incomplete_event_size", None)
    host = os.environ.get("HOST") or "127.0.0.1"
    uvicorn.run(create_app(settings), host=host, port=int(os.environ["PORT"]), **options)


if __name__ == "__main__":
    main()
