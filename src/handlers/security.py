"""Who is asking, whether they may, and the headers that keep the page safe."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, else None."""
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def presented_key(request: Request) -> str | None:
    """The access key from `Authorization: Bearer` or, for EventSource, the `key` parameter."""
    return bearer_token(request.headers.get("authorization")) or request.query_params.get("key")


def key_matches(given: str | None, expected: str) -> bool:
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def lambda_request_context(request: Request, *, on_lambda: bool) -> dict[str, Any] | None:
    """The Function URL's request context the Web Adapter forwards, trusted only on Lambda:
    anywhere else a client could send the header itself."""
    raw = request.headers.get("x-amzn-request-context") if on_lambda else None
    if not raw:
        return None
    try:
        context = json.loads(raw)
    except ValueError:
        return None
    return context if isinstance(context, dict) else None


def source_address(request: Request, *, on_lambda: bool) -> str:
    """The client's address: AWS's `sourceIp` on Lambda, else the socket's peer (which uvicorn
    replaces from X-Forwarded-For only for proxies named in FORWARDED_ALLOW_IPS)."""
    context = lambda_request_context(request, on_lambda=on_lambda)
    if context is not None:
        http = context.get("http")
        if isinstance(http, dict) and isinstance(http.get("sourceIp"), str):
            return str(http["sourceIp"])
    return request.client.host if request.client else "unknown"


def client_id(request: Request, *, keyed: bool, on_lambda: bool) -> str:
    """Rate-limit identity: the source address (an IPv6 client by its /64, which one host can
    rotate through), and with an access key, the key's hash too, so one key holder cannot use
    up the others' allowance."""
    address = _network(source_address(request, on_lambda=on_lambda))
    key = presented_key(request) if keyed else None
    if key:
        return f"key:{hashlib.sha256(key.encode()).hexdigest()[:16]}@{address}"
    return f"ip:{address}"


def _network(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _json_error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


class AccessKeyGuard:
    """Refuses guarded paths without the access key, before their body is read.

    Plain ASGI (a FastAPI dependency would run after the body was read and parsed): an
    unauthenticated request costs a header check, never a body's memory or parse time.
    `expected` resolves the key (None: the URL is open; "": configured but unresolvable,
    which fails closed).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        expected: Callable[[], Awaitable[str | None]],
        guarded: tuple[str, ...],
    ) -> None:
        self.app = app
        self._expected = expected
        self._guarded = guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not _under(scope["path"], self._guarded)
        ):
            await self.app(scope, receive, send)
            return
        expected = await self._expected()
        if expected is not None:
            request = Request(scope)
            if not expected:
                response = _json_error(
                    401, "the server's access key is not set up; ask its operator"
                )
                await response(scope, receive, send)
                return
            if not key_matches(presented_key(request), expected):
                response = _json_error(
                    401, "an access key is required: send Authorization: Bearer KEY or ?key=KEY"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    """`path` is one of `prefixes` or below one, by whole segments (`/chat.js` is not `/chat`)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


class BodyLimit:
    """Answers a request body over `limit` bytes with a JSON 413 before anything parses it.

    Content-Length is checked first; a body without one (chunked) is read here, counted, and
    handed on only if it fits, so no more than `limit` bytes are ever held.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self._limit = limit

    def _refusal(self) -> Response:
        return _json_error(413, f"request body is larger than {self._limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self._limit:
                await self._refusal()(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                await self._refusal()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


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
