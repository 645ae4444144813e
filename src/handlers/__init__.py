"""The HTTP side: the FastAPI app, the SSE wire encoding, Lambda entry points, the CLI."""
