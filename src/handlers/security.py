"""Who is asking, whether they may, and the headers that keep the page safe."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import Unauthorized

# On every response: harmless on JSON and SSE, and the page's files need no exceptions.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def presented_key(request: Request) -> str | None:
    """The access key from `Authorization: Bearer` or, for EventSource, the `key` parameter."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.query_params.get("key")


def require_access_key(request: Request, expected: str) -> None:
    given = presented_key(request)
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("an access key is required: send Authorization: Bearer KEY or ?key=KEY")


def client_id(request: Request, *, keyed: bool) -> str:
    """Rate-limit identity: the access key's hash when keys are checked, else the source IP.

    On Lambda the Web Adapter forwards the Function URL's request context, whose sourceIp
    AWS sets; it is trusted only there (a client reaching uvicorn directly could forge it).
    X-Forwarded-For's first entry is client-controlled and never used.
    """
    key = presented_key(request) if keyed else None
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    context = request.headers.get("x-amzn-request-context")
    if context and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        try:
            return "ip:" + str(json.loads(context)["http"]["sourceIp"])
        except (ValueError, KeyError, TypeError):
            pass
    return "ip:" + (request.client.host if request.client else "unknown")


class SecurityHeaders:
    """Adds the CSP and friends to every response.

    Hand-written as plain ASGI (Starlette ships no such middleware) because
    BaseHTTPMiddleware would wrap each streamed chunk; this only touches the response start.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with refused preflights answered in the API's JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode(errors="replace")
        return JSONResponse(
            {"error": f"CORS preflight refused: {reason}"}, status_code=response.status_code
        )
