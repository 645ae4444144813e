"""The one place that turns the core's errors into HTTP answers: `application/json` `{"error"}`.

Core errors carry no HTTP codes; this table gives them theirs. A subclass not named here takes
its nearest named ancestor's status, so a new error is never a 500 by accident.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import (
    InvalidRequest,
    InvalidSessionId,
    MessageTooLarge,
    PromptTooLong,
    RateLimited,
    RequestError,
    SessionBusy,
    SessionNotFound,
    StoreError,
    Unauthorized,
    UnknownRole,
)

logger = logging.getLogger("sse_chat_agent")

STATUS: dict[type[Exception], int] = {
    RequestError: 400,
    InvalidRequest: 400,
    InvalidSessionId: 400,
    UnknownRole: 400,
    Unauthorized: 401,
    SessionNotFound: 404,
    SessionBusy: 409,
    PromptTooLong: 413,
    MessageTooLarge: 413,
    RateLimited: 429,
    StoreError: 503,
}


def status_of(exc: Exception) -> int:
    """The status of `exc`'s nearest class in STATUS (500 for anything else)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every refusal is `application/json` `{"error": ...}`; never a traceback."""

    @app.exception_handler(RequestError)
    @app.exception_handler(StoreError)
    async def known(_: Request, exc: Exception) -> JSONResponse:
        headers: dict[str, str] | None = None
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        elif isinstance(exc, StoreError):
            headers = {"Retry-After": "1"}
        return error_response(status_of(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected %s", type(exc).__name__)
        return error_response(500, "internal error")


def describe_validation(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "request body is not valid JSON"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"
