"""OpenAI's error bodies, as its API writes them (401 masks the key, 429 says when to retry)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from simulator.replies import Reply


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> Any:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def masked(key: str) -> str:
    """Mask a key the way OpenAI's 401 message does: prefix and last four characters show."""
    if len(key) < 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def bearer_key(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def unauthorized(authorization: str | None) -> JSONResponse:
    key = bearer_key(authorization)
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return JSONResponse(error_body(message, "invalid_request_error", None), status_code=401)
    message = (
        f"Incorrect API key provided: {masked(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return JSONResponse(
        error_body(message, "invalid_request_error", "invalid_api_key"), status_code=401
    )


def http_fault(reply: Reply, authorization: str | None, model: str) -> JSONResponse:
    """The response of a scripted HTTP fault; `error_message` replaces the usual text."""
    status = int(reply["fault"])
    custom = reply.get("error_message")
    if status == 401 and custom is None:
        return unauthorized(authorization or "Bearer sk-simulated-key-xyz1")
    if status == 429:
        retry_after = float(reply.get("retry_after", 1))
        seconds = f"{retry_after:g}"
        millis = float(reply.get("retry_after_ms", retry_after * 1000))
        message = custom or (
            f"Rate limit reached for {model} in organization org-simulator on tokens per min "
            f"(TPM): Limit 30000, Used 29500, Requested 1200. Please try again in {seconds}s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more."
        )
        return JSONResponse(
            error_body(message, "tokens", "rate_limit_exceeded"),
            status_code=429,
            headers={"retry-after": seconds, "retry-after-ms": str(round(millis))},
        )
    if status >= 500:
        message = custom or (
            "The server had an error while processing your request. Sorry about that!"
        )
        return JSONResponse(error_body(message, "server_error", None), status_code=status)
    return JSONResponse(
        error_body(custom or f"Simulated HTTP {status}.", "invalid_request_error", None),
        status_code=status,
    )


def context_length_exceeded(window: int, prompt_tokens: int) -> JSONResponse:
    """OpenAI's refusal of a prompt over the model's context window."""
    message = (
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
    )
    return JSONResponse(
        error_body(message, "invalid_request_error", "context_length_exceeded", "messages"),
        status_code=400,
    )


def bad_request(message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, "invalid_request_error", None, param), status_code=400)


def error_chunk_body(reply: Reply) -> Any:
    """The `{"error": {...}}` object a provider sends mid-stream when it fails late."""
    message = reply.get("error_message") or "The server had an error processing your request."
    return error_body(message, "server_error", None)
