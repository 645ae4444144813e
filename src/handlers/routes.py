"""The HTTP interface of DESIGN section 3: each route reads its input and asks the relay or the
session store. Status codes for core errors come from `handlers.errors`, not from here."""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from core.errors import InvalidRequest
from core.model.port import is_simulated
from core.sessions.ids import check_session_id
from handlers.relay import Relay

STATIC_DIR = files("handlers").joinpath("static")
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 500
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One turn as Server-Sent Events: one `data: <JSON>` message per event.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


def relay_of(request: Request) -> Relay:
    """The app's relay (set by `create_app`)."""
    relay: Relay = request.app.state.relay
    return relay


RelayDep = Annotated[Relay, Depends(relay_of)]


class ChatBody(BaseModel):
    """`POST /chat` body; the prompt is checked by the core (400 empty, 413 too long)."""

    model_config = ConfigDict(extra="ignore")

    prompt: StrictStr | None = None
    session: StrictStr | None = None
    role: StrictStr | None = None


async def chat_get(
    request: Request,
    relay: RelayDep,
    prompt: str | None = None,
    session: str | None = None,
    role: str | None = None,
) -> Response:
    """Stream one turn as Server-Sent Events (EventSource-compatible); with `Last-Event-ID`
    (EventSource's reconnect), resume that turn instead: never a new one."""
    last_event_id = request.headers.get("last-event-id")
    if last_event_id is not None:
        return await relay.resume(last_event_id)
    return await relay.respond(await relay.start(request, prompt, session, role))


async def chat_post(request: Request, relay: RelayDep, body: ChatBody) -> Response:
    """The same stream for fetch() and long prompts; a repeated `Idempotency-Key` joins the
    first request's turn (replayed from its start) for 10 minutes."""
    key = request.headers.get("idempotency-key")
    if key is not None:
        return await relay.respond_once(request, key, body.prompt, body.session, body.role)
    turn = await relay.start(request, body.prompt, body.session, body.role)
    return await relay.respond(turn)


async def get_session(
    relay: RelayDep,
    session_id: str,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
    before: str | None = None,
) -> dict[str, Any]:
    """The session's newest `limit` messages, oldest first; `older` pages back."""
    page = await relay.services.sessions.page(
        check_session_id(session_id), now=time.time(), limit=limit, before=_cursor(before)
    )
    return {
        "id": page.session.id,
        "title": page.session.title,
        "created_at": page.session.created_at,
        "updated_at": page.session.updated_at,
        "running_turn": await relay.running_turn(page.session.id),
        "messages": [m.to_public() for m in page.session.messages],
        "older": None if page.older is None else str(page.older),
    }


async def session_stream(
    request: Request, relay: RelayDep, session_id: str, after: str | None = None
) -> Response:
    """Join the session's running (or last) turn: replay, then follow live. `after` (or
    `Last-Event-ID`, which wins) resumes after that event."""
    session_id = check_session_id(session_id)
    given = request.headers.get("last-event-id") or after
    if given:
        return await relay.resume(given, session_id)
    return await relay.join_session(session_id)


async def stop_session(relay: RelayDep, session_id: str) -> Response:
    """Stop the session's running turn wherever it runs: 202 if one was running, 204 if none."""
    stopped = await relay.stop(check_session_id(session_id))
    return Response(status_code=202 if stopped else 204)


async def delete_session(relay: RelayDep, session_id: str) -> Response:
    """Forget a session."""
    await relay.services.sessions.delete(check_session_id(session_id), now=time.time())
    return Response(status_code=204)


async def healthz(relay: RelayDep) -> dict[str, Any]:
    """Liveness, and what answers: the model's name and whether it is the simulated one."""
    model = relay.services.model
    return {
        "status": "ok",
        "model": model.name,
        "simulated": is_simulated(model),
        "store": relay.settings.session_store,
    }


async def page() -> FileResponse:
    return FileResponse(str(STATIC_DIR.joinpath("index.html")), media_type="text/html")


def router() -> APIRouter:
    """The route table. Built with the app, not at import: FastAPI analyses each signature as
    a route is added, which is work a cold start need not do twice."""
    routes = APIRouter()
    add = routes.add_api_route
    add("/chat", chat_get, methods=["GET"], responses=SSE_DOC, tags=["chat"])
    add("/chat", chat_post, methods=["POST"], responses=SSE_DOC, tags=["chat"])
    add("/sessions/{session_id}", get_session, methods=["GET"], tags=["sessions"])
    add(
        "/sessions/{session_id}/stream",
        session_stream,
        methods=["GET"],
        responses=SSE_DOC,
        tags=["sessions"],
    )
    add("/sessions/{session_id}/stop", stop_session, methods=["POST"], tags=["sessions"])
    add(
        "/sessions/{session_id}",
        delete_session,
        methods=["DELETE"],
        status_code=204,
        tags=["sessions"],
    )
    add("/healthz", healthz, methods=["GET"], tags=["ops"])
    add("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    add("/", page, methods=["GET", "HEAD"], include_in_schema=False)
    return routes


def _cursor(before: str | None) -> int | None:
    if before is None:
        return None
    if not before.isdigit() or len(before) > 12:
        raise InvalidRequest("malformed cursor: use the `older` value of a page")
    return int(before)
