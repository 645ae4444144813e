"""The FastAPI app and composition root: builds everything from Settings, same app everywhere.

Locally uvicorn serves `app` (streaming); on Lambda the Web Adapter runs the same under
uvicorn (streaming), and `handler` serves it through Mangum (buffered).
"""

import gc
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from core.chat import Turn, TurnLimits, TurnRequest, begin_turn
from core.context import context_window, token_counter
from core.errors import InvalidRequest, TurnNotFound
from core.events import Event
from core.live_turns import LiveTurn, LiveTurns, LogPolicy
from core.ports import ChatModel, SessionStore, is_simulated
from core.rate_limit import RateLimiter
from core.redaction import process_redactor
from core.roles import system_prompt_for
from core.session_ids import check_session_id, new_session_id
from core.settings import Settings
from core.tools import ToolRegistry, builtin_registry
from core.turn_log import TurnLog, TurnRecord, new_turn_id, visible
from core.turn_log_memory import MemoryTurnLog
from core.turn_readers import follow_log, has_ended, recover_lost
from handlers.errors import install_error_handlers
from handlers.logs import configure_logging
from handlers.observability import TurnTelemetry
from handlers.page_files import PageFiles
from handlers.security import (
    AccessKeyGuard,
    BodyLimit,
    JSONCORSMiddleware,
    SecurityHeaders,
    client_id,
    lambda_request_context,
)
from handlers.sse import DroppedClientFilter, SSEResponse, event_id, parse_event_id, to_sse

logger = logging.getLogger("sse_chat_agent")

STATIC_DIR = files("handlers").joinpath("static")
LAMBDA_DEADLINE_MARGIN_SECONDS = 3.0
RETRY_MS = 1000  # the SSE `retry:` field: EventSource's reconnect delay
GUARDED_PATHS = ("/chat", "/sessions", "/openapi.json")
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 500
IDEMPOTENCY_SECONDS = 600  # a repeated Idempotency-Key joins the first turn this long
JOIN_WAIT_SECONDS = 5.0  # a repeat may arrive while the first request is still starting
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
    turn_log: TurnLog | None = None,
    log_policy: LogPolicy | None = None,
) -> FastAPI:
    """Build the app. Explicit arguments (fakes in tests) beat what Settings would build."""
    settings = settings or Settings()
    redactor = process_redactor()
    redactor.add(*settings.secret_values)
    configure_logging(settings.log_level, redactor)

    from handlers.services import (
        access_key,
        build_model,
        build_rate_limiter,
        build_store,
        build_table,
        build_turn_log,
    )

    chat_model = model or build_model(settings)
    simulated = is_simulated(chat_model)
    table = build_table(settings)
    store = sessions or build_store(settings, table)
    if turn_log is None:
        # An injected store (a fake) gets the in-process log; otherwise the store's own kind.
        turn_log = (
            MemoryTurnLog(ttl_seconds=settings.turn_events_ttl_seconds)
            if sessions is not None
            else build_turn_log(settings, table)
        )
    log: TurnLog = turn_log
    policy = log_policy or LogPolicy()
    registry = tools if tools is not None else builtin_registry(settings.tool_names)
    limiter = rate_limiter or build_rate_limiter(settings, table)
    telemetry = TurnTelemetry(
        settings.log_level,
        # EMF metrics on Lambda (CloudWatch parses them from the log); off locally unless asked.
        emit_metrics=settings.on_lambda or settings.emit_metrics,
        namespace=settings.powertools_metrics_namespace,
    )
    # With an access key, a request reaching a route has passed `AccessKeyGuard`: its key is
    # genuine and may name the client; without one, a sent key proves nothing.
    keyed = settings.access_key is not None or bool(settings.access_key_secret)

    async def expected_key() -> str | None:
        if not keyed:
            return None
        try:
            return await access_key(settings) or ""
        except Exception as exc:
            # Fail closed: an unreadable key secret refuses everyone.
            logger.error("could not read the access key: %s", type(exc).__name__)
            return ""

    on_lambda = settings.on_lambda

    def client_of(request: Request) -> str:
        return client_id(request, keyed=keyed, on_lambda=on_lambda)

    async def settle(turn: Turn, duration: float) -> None:
        """The turn's log line and token spend, once, before its last event goes out."""
        telemetry.record(turn, request_id=turn.request_id, duration=duration)
        usage = turn.outcome.usage
        tokens = usage.prompt_tokens + usage.completion_tokens
        await limiter.spend(turn.client, tokens, now=time.time())

    turns = LiveTurns(on_finish=settle, log=log, policy=policy)
    limits = TurnLimits(
        max_prompt_chars=settings.max_prompt_chars,
        history_messages=settings.history_messages,
        max_tool_steps=settings.max_tool_steps,
        tool_timeout_seconds=settings.tool_timeout_seconds,
        turn_timeout_seconds=settings.turn_timeout_seconds,
        context_tokens=settings.context_tokens or context_window(settings.openai_model),
        reply_tokens=settings.max_tokens,
    )
    count_tokens, _ = token_counter(settings.openai_model)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, DroppedClientFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(DroppedClientFilter())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if simulated:
            logger.warning("No OPENAI_API_KEY set: the in-process simulated model answers")
        from handlers.services import warm_up  # Lambda init: boto3 client, Powertools, secrets

        await warm_up(settings, table)
        # Everything built so far lives as long as the process: freezing it keeps the cyclic
        # GC's collections from rescanning it while many streams run. On Lambda without a
        # collection first (about 50 ms of every cold start): startup's few cycles stay.
        if not settings.on_lambda:
            gc.collect()
        gc.freeze()
        gc.enable()  # `python -m handlers.serve` starts with it off
        yield
        gc.unfreeze()
        await turns.aclose()
        await log.aclose()
        await store.aclose()
        if table is not None:
            await table.aclose()
        aclose = getattr(chat_model, "aclose", None)
        if aclose is not None:
            await aclose()

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

    async def start_turn(
        request: Request,
        prompt: str | None,
        session: str | None,
        role: str | None,
        *,
        turn_id: str | None = None,
        new_session: str | None = None,
    ) -> Turn:
        client = client_of(request)
        await limiter.hit(client, now=time.time())
        turn_request = TurnRequest(
            prompt=prompt if prompt is not None else "",
            session_id=session or None,
            system_prompt=system_prompt_for(role or None, settings.system_prompt),
        )
        turn = await begin_turn(
            turn_request,
            model=chat_model,
            sessions=store,
            tools=registry,
            limits=limits,
            deadline=_lambda_deadline(request, on_lambda=on_lambda),
            count_tokens=count_tokens,
            turn_id=turn_id,
            new_session=new_session,
        )
        turn.client = client
        turn.request_id = _request_id(request, on_lambda=on_lambda)
        return turn

    def stream(events: AsyncGenerator[bytes, None], linger: Any = None) -> SSEResponse:
        return SSEResponse(
            events,
            heartbeat=settings.heartbeat_seconds,
            send_timeout=settings.send_timeout_seconds,
            linger=linger,
            retry_ms=RETRY_MS,
        )

    async def respond(turn: Turn) -> SSEResponse:
        live = await turns.start(turn)
        return stream(_relay(live), linger=live.wait_finished)

    async def join(
        session_id: str, turn_id: str, after: int, *, wait_open: float = 0.0
    ) -> Response:
        """Replay a turn's events after `after`, then follow it: from memory when this process
        runs it, else from the log. 204 when it ended with nothing left; 404 when unknown."""
        live = turns.find(session_id, turn_id)
        if live is not None:
            return stream(_relay(live, after))
        read = await log.read(session_id, turn_id, after=after, now=time.time())
        waited = 0.0
        while read is None and waited < wait_open:
            await anyio.sleep(policy.poll_seconds)
            waited += policy.poll_seconds
            live = turns.find(session_id, turn_id)
            if live is not None:
                return stream(_relay(live, after))
            read = await log.read(session_id, turn_id, after=after, now=time.time())
        if read is None:
            raise TurnNotFound()
        if has_ended(visible(read), after):
            return Response(status_code=204)
        events = follow_log(log, store, read, after=after, policy=policy)
        return stream(_relay_events(session_id, turn_id, events))

    async def resume(last_event_id: str, session_id: str | None = None) -> Response:
        parsed = parse_event_id(last_event_id)
        if parsed is None or (session_id is not None and parsed[0] != session_id):
            raise TurnNotFound()
        return await join(*parsed)

    @app.get("/chat", responses=SSE_DOC, tags=["chat"])
    async def chat_get(
        request: Request,
        prompt: str | None = None,
        session: str | None = None,
        role: str | None = None,
    ) -> Response:
        """Stream one turn as Server-Sent Events (EventSource-compatible); with
        `Last-Event-ID` (EventSource's reconnect), resume that turn instead: never a new one."""
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None:
            return await resume(last_event_id)
        return await respond(await start_turn(request, prompt, session, role))

    @app.post("/chat", responses=SSE_DOC, tags=["chat"])
    async def chat_post(request: Request, body: ChatBody) -> Response:
        """The same stream for fetch() and long prompts; a repeated `Idempotency-Key` joins
        the first request's turn (replayed from its start) for 10 minutes."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return await respond(await start_turn(request, body.prompt, body.session, body.role))
        if not key or len(key) > 255 or not key.isprintable():
            raise InvalidRequest("Idempotency-Key must be 1 to 255 printable characters")
        scope = hashlib.sha256(f"{client_of(request)}\n{key}".encode()).hexdigest()
        new_session = None if body.session else new_session_id()
        turn_id = new_turn_id()
        claimed = f"{body.session or new_session}.{turn_id}"
        held = await log.claim(scope, claimed, now=time.time(), ttl_seconds=IDEMPOTENCY_SECONDS)
        if held is not None:
            parsed = parse_event_id(f"{held}.0")
            if parsed is None:
                raise TurnNotFound()
            return await join(parsed[0], parsed[1], 0, wait_open=JOIN_WAIT_SECONDS)
        try:
            turn = await start_turn(
                request,
                body.prompt,
                body.session,
                body.role,
                turn_id=turn_id,
                new_session=new_session,
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await log.release(scope, claimed)
            raise
        return await respond(turn)

    async def running_turn(session_id: str) -> TurnRecord | None:
        """The session's running turn from the log (any instance), None when none runs; a
        producer silent past its lease does not count."""
        latest = await log.latest(session_id, now=time.time())
        if latest is None or not latest.running:
            return None
        if time.time() > latest.lease_until + policy.lost_after_seconds:
            return None
        return latest

    @app.get("/sessions/{session_id}", tags=["sessions"])
    async def get_session(
        session_id: str,
        limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
        before: str | None = None,
    ) -> dict[str, Any]:
        """The session's newest `limit` messages, oldest first; `older` pages back."""
        page = await store.page(
            check_session_id(session_id),
            now=time.time(),
            limit=limit,
            before=_cursor(before),
        )
        local = turns.running(page.session.id)
        running = local.turn_id if local is not None else None
        if running is None:
            record = await running_turn(page.session.id)
            running = None if record is None else record.turn_id
        return {
            "id": page.session.id,
            "title": page.session.title,
            "created_at": page.session.created_at,
            "updated_at": page.session.updated_at,
            "running_turn": running,
            "messages": [m.to_public() for m in page.session.messages],
            "older": None if page.older is None else str(page.older),
        }

    @app.get("/sessions/{session_id}/stream", responses=SSE_DOC, tags=["sessions"])
    async def session_stream(
        request: Request, session_id: str, after: str | None = None
    ) -> Response:
        """Join the session's running (or last) turn: replay, then follow live. `after` (or
        `Last-Event-ID`, which wins) resumes after that event."""
        session_id = check_session_id(session_id)
        given = request.headers.get("last-event-id") or after
        if given:
            return await resume(given, session_id)
        local = turns.running(session_id)
        if local is not None:
            return stream(_relay(local))
        await store.load(session_id, now=time.time(), limit=0)  # unknown or expired: 404
        latest = await log.latest(session_id, now=time.time())
        if latest is None:
            return Response(status_code=204)
        return await join(session_id, latest.turn_id, 0)

    @app.post("/sessions/{session_id}/stop", tags=["sessions"])
    async def stop_session(session_id: str) -> Response:
        """Stop the session's running turn wherever it runs: 202 if one was running, 204 if
        none. The producer sees the flag at its next flush or heartbeat."""
        session_id = check_session_id(session_id)
        if turns.stop(session_id):
            return Response(status_code=202)
        now = time.time()
        latest = await log.latest(session_id, now=now)
        if latest is not None and latest.running:
            if now > latest.lease_until + policy.lost_after_seconds:
                # Nobody produces it any more: end it here, as a reader would.
                read = await log.read(session_id, latest.turn_id, after=0, now=now)
                end = 0 if read is None or read.last_position is None else read.last_position
                if await log.declare_lost(session_id, latest.turn_id, now=now, end=end):
                    await recover_lost(log, store, session_id, latest.turn_id, end=end)
                return Response(status_code=202)
            if await log.request_stop(session_id, latest.turn_id, now=now):
                return Response(status_code=202)
        await store.load(session_id, now=now, limit=0)  # unknown or expired: 404
        return Response(status_code=204)

    @app.delete("/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: str) -> Response:
        """Forget a session."""
        await store.delete(check_session_id(session_id), now=time.time())
        return Response(status_code=204)

    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness."""
        return {
            "status": "ok",
            "model": chat_model.name,
            "simulated": simulated,
            "store": settings.session_store,
        }

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR.joinpath("index.html")), media_type="text/html")

    # The page references its files relatively (main.js next to index.html), so any static host
    # can serve it too (pointed here with ?api=); served here they sit at the root, after every
    # route.
    app.mount("/", PageFiles(directory=str(STATIC_DIR)), name="static")
    return app


async def _relay(live: LiveTurn, after: int = 0) -> AsyncGenerator[bytes, None]:
    """A reader of the live turn: its events as SSE, at this client's pace."""
    async for position, event in live.follow(after):
        yield to_sse(event, event_id(live.session_id, live.turn_id, position))


async def _relay_events(
    session_id: str, turn_id: str, events: AsyncIterator[tuple[int, Event]]
) -> AsyncGenerator[bytes, None]:
    """A reader of a turn's log (produced elsewhere): the same ids, the same JSON."""
    async for position, event in events:
        yield to_sse(event, event_id(session_id, turn_id, position))


def _cursor(before: str | None) -> int | None:
    if before is None:
        return None
    if not before.isdigit() or len(before) > 12:
        raise InvalidRequest("malformed cursor: use the `older` value of a page")
    return int(before)


def _request_id(request: Request, *, on_lambda: bool) -> str:
    context = lambda_request_context(request, on_lambda=on_lambda)
    if context is not None and isinstance(context.get("requestId"), str):
        return str(context["requestId"])
    given = request.headers.get("x-request-id", "")
    return given[:64] if given.isprintable() and given else uuid.uuid4().hex


def _lambda_deadline(request: Request, *, on_lambda: bool) -> float | None:
    """The invocation's deadline as a monotonic instant, from the Web Adapter's context header.

    Only on Lambda: anywhere else a client could send the header to lift its own deadline.
    """
    raw = request.headers.get("x-amzn-lambda-context") if on_lambda else None
    if not raw:
        return None
    try:
        deadline_ms = float(json.loads(raw)["deadline"])
    except (ValueError, KeyError, TypeError):
        return None
    if not math.isfinite(deadline_ms):
        return None
    left = deadline_ms / 1000 - time.time() - LAMBDA_DEADLINE_MARGIN_SECONDS
    return time.monotonic() + max(left, 0.0)


def __getattr__(name: str) -> Any:
    """`app` (what uvicorn serves) is built on first use, so importing this module stays cheap.

    The buffered Lambda entry point is `handlers.buffered.handler`.
    """
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
