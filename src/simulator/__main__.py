"""`python -m simulator`: serve the simulator alone (the benchmark's upstream, demos)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator on HOST:PORT until interrupted."""
    import uvicorn

    from simulator.server import create_simulator

    parser = argparse.ArgumentParser(description="OpenAI-compatible simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--delay-ms", type=float, default=25.0, help="pace between chunks")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--context-tokens", type=int, default=None, help="refuse prompts over this many tokens"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    app = create_simulator(
        token_delay_ms=args.delay_ms, api_key=args.api_key, context_tokens=args.context_tokens
    )
    print(f"simulator: http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        http="h11",  # the same HTTP stack whatever else is installed (httptools)
        timeout_graceful_shutdown=1,  # a scripted stall must not hold up Ctrl-C
    )


if __name__ == "__main__":
    main()
