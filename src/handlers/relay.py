"""The relay: starts turns for HTTP requests and streams them, live or from the turn log.

Routes (`handlers.routes`) call it; it holds the running turns of this process and reaches
turns produced elsewhere through the turn log. Every stream it returns is an `SSEResponse`
whose event ids are the opaque `session.turn.position` ids of DESIGN section 8.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from fastapi import Request, Response

from core.chat.context import context_window, token_counter
from core.chat.roles import system_prompt_for
from core.chat.turn import Turn, TurnLimits, TurnRequest, begin_turn
from core.errors import InvalidRequest, TurnNotFound
from core.events import Event
from core.sessions.ids import new_session_id, new_turn_id
from core.turns.live import LiveTurn, LiveTurns
from core.turns.log import TurnRecord, visible
from core.turns.readers import follow_log, has_ended, recover_lost
from handlers.container import Services
from handlers.security import client_id, lambda_request_context
from handlers.sse import SSEResponse, event_id, parse_event_id, to_sse

LAMBDA_DEADLINE_MARGIN_SECONDS = 3.0
RETRY_MS = 1000  # the SSE `retry:` field: EventSource's reconnect delay
IDEMPOTENCY_SECONDS = 600  # a repeated Idempotency-Key joins the first turn this long
JOIN_WAIT_SECONDS = 5.0  # a repeat may arrive while the first request is still starting


class Relay:
    """Turns for requests: start, stream, join, resume, stop."""

    def __init__(self, services: Services, *, keyed: bool) -> None:
        settings = services.settings
        self.services = services
        self.settings = settings
        # With an access key, a request reaching a route has passed `AccessKeyGuard`: its key
        # is genuine and may name the client; without one, a sent key proves nothing.
        self._keyed = keyed
        self._on_lambda = settings.on_lambda
        self._log = services.turn_log
        self._store = services.sessions
        self._policy = services.log_policy
        self.turns = LiveTurns(on_finish=self._settle, log=self._log, policy=self._policy)
        self._limits = TurnLimits(
            max_prompt_chars=settings.max_prompt_chars,
            history_messages=settings.history_messages,
            max_tool_steps=settings.max_tool_steps,
            tool_timeout_seconds=settings.tool_timeout_seconds,
            turn_timeout_seconds=settings.turn_timeout_seconds,
            context_tokens=settings.context_tokens or context_window(settings.openai_model),
            reply_tokens=settings.max_tokens,
        )
        self._count_tokens, _ = token_counter(settings.openai_model)

    def client_of(self, request: Request) -> str:
        return client_id(request, keyed=self._keyed, on_lambda=self._on_lambda)

    async def start(
        self,
        request: Request,
        prompt: str | None,
        session: str | None,
        role: str | None,
        *,
        turn_id: str | None = None,
        new_session: str | None = None,
    ) -> Turn:
        """Check the client's quota and begin a turn (the session leased, the prompt stored)."""
        client = self.client_of(request)
        await self.services.rate_limiter.hit(client, now=time.time())
        turn_request = TurnRequest(
            prompt=prompt if prompt is not None else "",
            session_id=session or None,
            system_prompt=system_prompt_for(role or None, self.settings.system_prompt),
        )
        turn = await begin_turn(
            turn_request,
            model=self.services.model,
            sessions=self._store,
            tools=self.services.tools,
            limits=self._limits,
            deadline=_lambda_deadline(request, on_lambda=self._on_lambda),
            count_tokens=self._count_tokens,
            turn_id=turn_id,
            new_session=new_session,
        )
        turn.client = client
        turn.request_id = _request_id(request, on_lambda=self._on_lambda)
        return turn

    async def respond(self, turn: Turn) -> SSEResponse:
        """Run the turn in this process and stream it to this client."""
        live = await self.turns.start(turn)
        return self._stream(_relay(live), linger=live.wait_finished)

    async def respond_once(
        self, request: Request, key: str, prompt: str | None, session: str | None, role: str | None
    ) -> Response:
        """`POST /chat` with an `Idempotency-Key`: the first request with the key starts the
        turn; a repeat within 10 minutes joins that turn (replayed from its start)."""
        if not key or len(key) > 255 or not key.isprintable():
            raise InvalidRequest("Idempotency-Key must be 1 to 255 printable characters")
        scope = hashlib.sha256(f"{self.client_of(request)}\n{key}".encode()).hexdigest()
        new_session = None if session else new_session_id()
        turn_id = new_turn_id()
        claimed = f"{session or new_session}.{turn_id}"
        held = await self._log.claim(
            scope, claimed, now=time.time(), ttl_seconds=IDEMPOTENCY_SECONDS
        )
        if held is not None:
            parsed = parse_event_id(f"{held}.0")
            if parsed is None:
                raise TurnNotFound()
            return await self.join(parsed[0], parsed[1], 0, wait_open=JOIN_WAIT_SECONDS)
        try:
            turn = await self.start(
                request, prompt, session, role, turn_id=turn_id, new_session=new_session
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._log.release(scope, claimed)
            raise
        return await self.respond(turn)

    async def join(
        self, session_id: str, turn_id: str, after: int, *, wait_open: float = 0.0
    ) -> Response:
        """Replay a turn's events after `after`, then follow it: from memory when this process
        runs it, else from the log. 204 when it ended with nothing left; 404 when unknown."""
        live = self.turns.find(session_id, turn_id)
        if live is not None:
            return self._stream(_relay(live, after))
        read = await self._log.read(session_id, turn_id, after=after, now=time.time())
        waited = 0.0
        while read is None and waited < wait_open:
            await anyio.sleep(self._policy.poll_seconds)
            waited += self._policy.poll_seconds
            live = self.turns.find(session_id, turn_id)
            if live is not None:
                return self._stream(_relay(live, after))
            read = await self._log.read(session_id, turn_id, after=after, now=time.time())
        if read is None:
            raise TurnNotFound()
        if has_ended(visible(read), after):
            return Response(status_code=204)
        events = follow_log(self._log, self._store, read, after=after, policy=self._policy)
        return self._stream(_relay_events(session_id, turn_id, events))

    async def resume(self, last_event_id: str, session_id: str | None = None) -> Response:
        """Resume after an event id (`Last-Event-ID`); 404 when it names no turn."""
        parsed = parse_event_id(last_event_id)
        if parsed is None or (session_id is not None and parsed[0] != session_id):
            raise TurnNotFound()
        return await self.join(*parsed)

    async def join_session(self, session_id: str) -> Response:
        """Join the session's running turn, else replay its last one; 204 when it has none."""
        local = self.turns.running(session_id)
        if local is not None:
            return self._stream(_relay(local))
        await self._store.load(session_id, now=time.time(), limit=0)  # unknown/expired: 404
        latest = await self._log.latest(session_id, now=time.time())
        if latest is None:
            return Response(status_code=204)
        return await self.join(session_id, latest.turn_id, 0)

    async def running_turn(self, session_id: str) -> str | None:
        """The id of the session's running turn, here or on any instance; a producer silent
        past its lease does not count."""
        local = self.turns.running(session_id)
        if local is not None:
            return local.turn_id
        record = await self._running_record(session_id)
        return None if record is None else record.turn_id

    async def _running_record(self, session_id: str) -> TurnRecord | None:
        latest = await self._log.latest(session_id, now=time.time())
        if latest is None or not latest.running:
            return None
        if time.time() > latest.lease_until + self._policy.lost_after_seconds:
            return None
        return latest

    async def stop(self, session_id: str) -> bool:
        """Stop the session's running turn wherever it runs; False when none runs (404 when
        the session is unknown). The producer sees the flag at its next flush or heartbeat."""
        if self.turns.stop(session_id):
            return True
        now = time.time()
        latest = await self._log.latest(session_id, now=now)
        if latest is not None and latest.running:
            if now > latest.lease_until + self._policy.lost_after_seconds:
                # Nobody produces it any more: end it here, as a reader would.
                read = await self._log.read(session_id, latest.turn_id, after=0, now=now)
                end = 0 if read is None or read.last_position is None else read.last_position
                if await self._log.declare_lost(session_id, latest.turn_id, now=now, end=end):
                    await recover_lost(self._log, self._store, session_id, latest.turn_id, end=end)
                return True
            if await self._log.request_stop(session_id, latest.turn_id, now=now):
                return True
        await self._store.load(session_id, now=now, limit=0)  # unknown or expired: 404
        return False

    async def aclose(self) -> None:
        await self.turns.aclose()

    async def _settle(self, turn: Turn, duration: float) -> None:
        """The turn's log line and token spend, once, before its last event goes out."""
        self.services.telemetry.record(turn, request_id=turn.request_id, duration=duration)
        usage = turn.outcome.usage
        tokens = usage.prompt_tokens + usage.completion_tokens
        await self.services.rate_limiter.spend(turn.client, tokens, now=time.time())

    def _stream(self, events: AsyncGenerator[bytes, None], linger: Any = None) -> SSEResponse:
        return SSEResponse(
            events,
            heartbeat=self.settings.heartbeat_seconds,
            send_timeout=self.settings.send_timeout_seconds,
            linger=linger,
            retry_ms=RETRY_MS,
        )


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
