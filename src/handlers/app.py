"""The FastAPI app: wiring only. Services come from `handlers.container`, the routes from
`handlers.routes`, status codes from `handlers.errors`; the same app runs everywhere.

Locally `handlers.serve` runs it under uvicorn (streaming); on Lambda the Web Adapter runs the
same under uvicorn (streaming), and `handlers.buffered.handler` serves it through Mangum.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.model.port import is_simulated
from core.redaction import process_redactor
from core.settings import Settings
from handlers.container import Services, build_services, warm_up
from handlers.errors import install_error_handlers
from handlers.page_files import PageFiles
from handlers.relay import Relay
from handlers.routes import STATIC_DIR, router
from handlers.security import AccessKeyGuard, BodyLimit, JSONCORSMiddleware, SecurityHeaders
from handlers.sse import DroppedClientFilter
from handlers.telemetry import configure_logging

logger = logging.getLogger("sse_chat_agent")

GUARDED_PATHS = ("/chat", "/sessions", "/openapi.json")


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """Wire the services (built from Settings unless given) into one FastAPI app."""
    settings = settings or Settings()
    redactor = process_redactor()
    redactor.add(*settings.secret_values)
    configure_logging(settings.log_level, redactor)
    services = services or build_services(settings)
    keyed = settings.access_key is not None or bool(settings.access_key_secret)
    relay = Relay(services, keyed=keyed)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DroppedClientFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DroppedClientFilter())

    async def expected_key() -> str | None:
        if not keyed:
            return None
        try:
            return await services.secrets.access_key() or ""
        except Exception as exc:
            # Fail closed: an unreadable key secret refuses everyone.
            logger.error("could not read the access key: %s", type(exc).__name__)
            return ""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if is_simulated(services.model):
            logger.warning("No OPENAI_API_KEY set: the in-process simulated model answers")
        await warm_up(services)  # Lambda init: DynamoDB's connection, Powertools, secrets
        # Everything built so far lives as long as the process: freezing it keeps the cyclic
        # GC's collections from rescanning it while many streams run. On Lambda without a
        # collection first (about 50 ms of every cold start): startup's few cycles stay.
        if not settings.on_lambda:
            gc.collect()
        gc.freeze()
        gc.enable()  # `python -m handlers.serve` starts with it off
        yield
        gc.unfreeze()
        await relay.aclose()
        await services.aclose()

    app = FastAPI(
        title="sse-chat-agent",
        summary="A streaming chat agent: an OpenAI-compatible model's tokens over SSE.",
        version="0.1.0",
        lifespan=lifespan,
        # No Swagger or ReDoc page: they load scripts from a CDN, which the page's CSP refuses.
        # The schema stays at /openapi.json (behind the access key when one is set).
        docs_url=None,
        redoc_url=None,
    )
    app.state.relay = relay
    install_error_handlers(app)
    # Innermost first: the body limit, then the access key (checked before any body is read),
    # then the page's security headers on every answer, then CORS outermost.
    app.add_middleware(BodyLimit, limit=settings.body_limit)
    app.add_middleware(AccessKeyGuard, expected=expected_key, guarded=GUARDED_PATHS)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        # Local only: on Lambda the Function URL's Cors config answers, and two layers would
        # send duplicate Access-Control-Allow-Origin headers, which browsers reject.
        app.add_middleware(
            JSONCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["content-type", "authorization", "last-event-id", "idempotency-key"],
            expose_headers=["retry-after"],
            max_age=600,
        )
    app.include_router(router())
    # The page references its files relatively (main.js next to index.html), so any static host
    # can serve it too (pointed here with ?api=); served here they sit at the root, after every
    # route.
    app.mount("/", PageFiles(directory=str(STATIC_DIR)), name="static")
    return app
