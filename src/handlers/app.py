"""The FastAPI app and composition root: builds everything from Settings, same app everywhere.

Locally uvicorn serves `app` (streaming); on Lambda the Web Adapter runs the same under
uvicorn (streaming), and `handler` serves it through Mangum (buffered).
"""

import gc
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.chat import Turn, TurnLimits, TurnRequest, begin_turn
from core.errors import ChatError, RateLimited, RequestError, StoreError, Unauthorized
from core.events import Done, Failed
from core.ports import ChatModel, SessionStore
from core.rate_limit import RateLimiter
from core.roles import system_prompt_for
from core.session_ids import check_session_id
from core.settings import Settings
from core.tools import ToolRegistry, builtin_registry
from handlers.observability import TurnTelemetry
from handlers.security import (
    JSONCORSMiddleware,
    SecurityHeaders,
    client_id,
    require_access_key,
)
from handlers.sse import SSEResponse, to_sse

logger = logging.getLogger("sse_chat_agent")

STATIC_DIR = files("handlers").joinpath("static")
LAMBDA_DEADLINE_MARGIN_SECONDS = 3.0
TERMINAL_EVENTS = (Done, Failed)
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One turn as Server-Sent Events: one `data: <JSON>` message per event.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class ChatBody(BaseModel):
    """`POST /chat` body; the prompt is checked by the core (400 empty, 413 too long)."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr | None = None
    session: StrictStr | None = None
    role: StrictStr | None = None


def create_app(
    settings: Settings | None = None,
    *,
    model: ChatModel | None = None,
    sessions: SessionStore | None = None,
    tools: ToolRegistry | None = None,
    rate_limiter: RateLimiter | None = None,
    in_process_simulator: bool = False,
) -> FastAPI:
    """Build the app. Explicit arguments (fakes in tests) beat what Settings would build."""
    settings = settings or Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from handlers.services import access_key, build_model, build_rate_limiter, build_store

    simulator: FastAPI | None = None
    if model is None and settings.use_simulator:
        from handlers.simulator import create_simulator

        simulator = create_simulator(token_delay_ms=settings.simulator_token_delay_ms)
    chat_model = model or build_model(
        settings, simulator=simulator if in_process_simulator else None
    )
    store = sessions or build_store(settings)
    registry = tools if tools is not None else builtin_registry(settings.tool_names)
    limiter = rate_limiter or build_rate_limiter(settings, store)
    telemetry = TurnTelemetry(settings.log_level)
    guarded: list[Any] = []
    # With an access key, a request reaching a route has passed `check_key`: its key is
    # genuine and may name the client; without one, a sent key proves nothing.
    keyed = settings.access_key is not None or bool(settings.access_key_secret)
    if keyed:

        async def check_key(request: Request) -> None:
            expected = await access_key(settings)
            if not expected:
                # A key was configured but resolves to nothing: fail closed, never open.
                raise Unauthorized("the server's access key is not set up; ask its operator")
            require_access_key(request, expected)

        guarded.append(Depends(check_key))
    limits = TurnLimits(
        max_prompt_chars=settings.max_prompt_chars,
        history_messages=settings.history_messages,
        max_tool_steps=settings.max_tool_steps,
        tool_timeout_seconds=settings.tool_timeout_seconds,
        turn_timeout_seconds=settings.turn_timeout_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if simulator is not None:
            logger.warning(
                "No OPENAI_API_KEY set: the built-in simulator answers (model %r)", chat_model.name
            )
        from handlers.services import warm_up  # Lambda init: boto3 client, Powertools, secrets

        await warm_up(settings, store)
        # Everything built so far lives as long as the process: freezing it keeps the cyclic
        # GC's full collections from rescanning it while streams run.
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()
        await store.aclose()
        aclose = getattr(chat_model, "aclose", None)
        if aclose is not None:
            await aclose()

    app = FastAPI(
        title="sse-chat-agent",
        summary="A streaming chat agent: an OpenAI-compatible model's tokens over SSE.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.model = chat_model
    app.state.sessions = store
    app.state.simulator = simulator
    _install_error_handlers(app)
    app.add_middleware(SecurityHeaders)

    if settings.cors_origins:
        # Local only: on Lambda the Function URL's Cors config answers, and two layers would
        # send duplicate Access-Control-Allow-Origin headers, which browsers reject.
        app.add_middleware(
            JSONCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["content-type", "authorization"],
            max_age=600,
        )

    async def start_turn(
        request: Request, prompt: str | None, session: str | None, role: str | None
    ) -> Turn:
        await limiter.hit(client_id(request, keyed=keyed), now=time.time())
        turn_request = TurnRequest(
            prompt=prompt if prompt is not None else "",
            session_id=session or None,
            system_prompt=system_prompt_for(role or None, settings.system_prompt),
        )
        return await begin_turn(
            turn_request,
            model=chat_model,
            sessions=store,
            tools=registry,
            limits=limits,
            deadline=_lambda_deadline(request),
        )

    async def turn_from_query(
        request: Request,
        prompt: str | None = None,
        session: str | None = None,
        role: str | None = None,
    ) -> Turn:
        return await start_turn(request, prompt, session, role)

    async def turn_from_body(request: Request, body: ChatBody) -> Turn:
        return await start_turn(request, body.prompt, body.session, body.role)

    async def stream(request: Request, turn: Turn) -> AsyncGenerator[bytes, None]:
        started = time.monotonic()
        accounted = False

        async def account() -> None:
            """The turn's log line and token spend, once, before its last event goes out."""
            nonlocal accounted
            if accounted:
                return
            accounted = True
            telemetry.record(
                turn, request_id=_request_id(request), duration=time.monotonic() - started
            )
            tokens = turn.outcome.usage.prompt_tokens + turn.outcome.usage.completion_tokens
            try:
                await limiter.spend(client_id(request, keyed=keyed), tokens, now=time.time())
            except ChatError as exc:
                logger.warning("could not count the turn's tokens: %s", type(exc).__name__)

        seq = 0
        try:
            async with aclosing(turn.events()) as events:
                try:
                    async for event in events:
                        seq += 1
                        if isinstance(event, TERMINAL_EVENTS):
                            await account()
                        yield to_sse(event, seq)
                except Exception as exc:
                    # A bug, not a ChatError: the turn already stored its partial reply; the
                    # client still gets `{"error"}` last (unless the turn had ended) and a
                    # cleanly closed stream.
                    logger.error("unexpected %s in a turn", type(exc).__name__)
                    if not accounted:
                        turn.outcome.error = "internal error"
                        await account()
                        yield to_sse(Failed("internal error"), seq + 1)
        finally:
            with anyio.CancelScope(shield=True):
                await account()

    @app.get("/chat", responses=SSE_DOC, tags=["chat"], dependencies=guarded)
    async def chat_get(
        request: Request, turn: Annotated[Turn, Depends(turn_from_query)]
    ) -> SSEResponse:
        """Stream one turn as Server-Sent Events (EventSource-compatible)."""
        return SSEResponse(stream(request, turn), heartbeat=settings.heartbeat_seconds)

    @app.post("/chat", responses=SSE_DOC, tags=["chat"], dependencies=guarded)
    async def chat_post(
        request: Request, turn: Annotated[Turn, Depends(turn_from_body)]
    ) -> SSEResponse:
        """The same stream for fetch() and long prompts."""
        return SSEResponse(stream(request, turn), heartbeat=settings.heartbeat_seconds)

    @app.get("/sessions/{session_id}", tags=["sessions"], dependencies=guarded)
    async def get_session(session_id: str) -> dict[str, Any]:
        """The session's messages, oldest first."""
        loaded = await store.load(check_session_id(session_id), now=time.time())
        return {
            "id": loaded.id,
            "title": loaded.title,
            "created_at": loaded.created_at,
            "updated_at": loaded.updated_at,
            "messages": [m.to_public() for m in loaded.messages],
        }

    @app.delete("/sessions/{session_id}", status_code=204, tags=["sessions"], dependencies=guarded)
    async def delete_session(session_id: str) -> Response:
        """Forget a session."""
        await store.delete(check_session_id(session_id), now=time.time())
        return Response(status_code=204)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness."""
        return {"status": "ok", "model": chat_model.name, "store": settings.session_store}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR.joinpath("index.html")), media_type="text/html")

    if simulator is not None:
        app.mount("/simulator", simulator)
    # The page references its files relatively (app.js next to index.html), so it also works
    # opened as a file; served here they sit at the root, after every route.
    app.mount("/", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _request_id(request: Request) -> str:
    context = request.headers.get("x-amzn-request-context")
    if context:
        try:
            return str(json.loads(context)["requestId"])
        except (ValueError, KeyError, TypeError):
            pass
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def _lambda_deadline(request: Request) -> float | None:
    """The invocation's deadline as a monotonic instant, from the Web Adapter's context header."""
    raw = request.headers.get("x-amzn-lambda-context")
    if not raw:
        return None
    try:
        deadline_ms = float(json.loads(raw)["deadline"])
    except (ValueError, KeyError, TypeError):
        return None
    left = deadline_ms / 1000 - time.time() - LAMBDA_DEADLINE_MARGIN_SECONDS
    return time.monotonic() + max(left, 0.0)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every refusal is `application/json` `{"error": ...}`; never a traceback."""

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return _error(exc.status_code, str(exc), headers)

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected %s", type(exc).__name__)
        return _error(500, "internal error")


def _describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "request body is not valid JSON"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def __getattr__(name: str) -> Any:
    """`app` and `handler` are built on first use, so importing this module stays cheap."""
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    if name == "handler":
        from mangum import Mangum

        # Buffered Lambda entry (sam local invoke, API Gateway, ALB): its own app instance,
        # with the simulator (if used) called in-process since no server listens here.
        # Lifespan off: Mangum would run shutdown after every invocation, closing the HTTP
        # client that warm invocations reuse.
        globals()["handler"] = Mangum(create_app(in_process_simulator=True), lifespan="off")
        return globals()["handler"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
