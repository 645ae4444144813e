"""OpenAI Chat Completions streaming adapter: httpx + httpx-sse, typed events, typed errors.

Retries happen only before anything reached the caller (connect errors, 429, 5xx), so a
client never sees a token twice. Every wait is bounded: connect, first token, idle gap
between chunks, and the turn's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse

from core.errors import (
    TurnDeadline,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from core.events import Usage
from core.messages import Message, ToolCall
from core.ports import Completion, ModelEvent, TextDelta, ToolCallBegan
from core.redaction import Redactor

ApiKeyProvider = Callable[[], Awaitable[str | None]]

_SURROGATE = re.compile("[\ud800-\udfff]")
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_RETRY_WAIT_SECONDS = 10.0


class _Retry(Exception):
    """An attempt failed in a way worth another try (nothing was relayed yet)."""

    def __init__(self, error: UpstreamError, wait: float) -> None:
        self.error, self.wait = error, wait


class OpenAIChatModel:
    """`ChatModel` over any OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        base_url: str,
        model: str,
        api_key: ApiKeyProvider,
        max_tokens: int,
        display_name: str | None = None,
        first_token_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        max_retries: int = 2,
        backoff_seconds: float = 0.5,
        redactor: Redactor | None = None,
    ) -> None:
        self._client = client
        # Provider error text reaches clients and logs: the key (and any secret the redactor
        # knows) never does, whole or in part.
        self._redact = redactor if redactor is not None else Redactor()
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._api_key = api_key
        self._max_tokens = max_tokens
        # OpenAI deprecated max_tokens for max_completion_tokens; many compatible servers
        # only know max_tokens.
        self._max_tokens_field = (
            "max_completion_tokens" if "api.openai.com" in base_url else "max_tokens"
        )
        self._name = display_name or model
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._max_retries = max_retries
        self._backoff = backoff_seconds

    @property
    def name(self) -> str:
        return self._name

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            self._max_tokens_field: self._max_tokens,
        }
        if tools:
            body["tools"] = list(tools)
        return body

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] = (),
        deadline: float | None = None,
    ) -> AsyncGenerator[ModelEvent, None]:
        body = self.request_body(messages, tools)
        key = await self._api_key()
        if key:
            self._redact.add(key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        attempt = 0
        while True:
            attempt += 1
            relayed = False
            try:
                async with contextlib.aclosing(self._attempt(body, headers, deadline)) as events:
                    async for event in events:
                        relayed = True
                        yield event
                return
            except _Retry as retry:
                if relayed or attempt > self._max_retries or retry.wait > MAX_RETRY_WAIT_SECONDS:
                    # (A provider asking for a longer wait than we give would refuse again.)
                    raise retry.error from None
                wait = retry.wait if retry.wait >= 0 else self._backoff * 2 ** (attempt - 1)
                if deadline is not None and time.monotonic() + wait >= deadline:
                    raise retry.error from None
                await anyio.sleep(wait)

    async def _attempt(
        self,
        body: dict[str, Any],
        headers: dict[str, str],
        deadline: float | None,
    ) -> AsyncGenerator[ModelEvent, None]:
        # Connecting and the response headers are bounded like the first token: a provider
        # that hangs before answering must not hold the turn open.
        wait, at_deadline = self._first_token_timeout, False
        if deadline is not None and deadline - time.monotonic() <= wait:
            wait, at_deadline = max(deadline - time.monotonic(), 0.0), True
        try:
            async with asyncio.timeout(wait) as head:
                async with aconnect_sse(
                    self._client, "POST", self._url, json=body, headers=headers
                ) as source:
                    response = source.response
                    if response.status_code != 200:
                        await response.aread()
                        raise _status_error(response, self._redact)
                    head.reschedule(None)
                    async with contextlib.aclosing(
                        self._parse(source.aiter_sse(), deadline)
                    ) as events:
                        async for event in events:
                            yield event
        except TimeoutError:
            if at_deadline:
                raise TurnDeadline() from None
            raise UpstreamTimeout("the model provider did not start answering in time") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retry(
                UpstreamUnavailable("could not connect to the model provider"), -1
            ) from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("the model provider stopped responding") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise UpstreamProtocolError(
                "the model provider closed the stream before it finished"
            ) from exc
        except SSEError as exc:
            raise UpstreamProtocolError(
                "the model provider did not answer with an event stream"
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailable("the connection to the model provider failed") from exc

    async def _parse(
        self, events: AsyncIterator[Any], deadline: float | None
    ) -> AsyncGenerator[ModelEvent, None]:
        finish_reason: str | None = None
        usage = Usage()
        calls: dict[int, list[Any]] = {}  # index -> [id, name, [argument fragments]]
        started = at_deadline = False
        loop = asyncio.get_running_loop()
        try:
            # One timer for the whole stream, armed around each wait and disarmed while a chunk
            # is handed on (a slow consumer must not trip it): anyio.fail_after per chunk cost
            # twice as much on the per-token path (make bench).
            async with asyncio.timeout(None) as guard:
                while True:
                    wait = self._idle_timeout if started else self._first_token_timeout
                    if deadline is not None and deadline - time.monotonic() <= wait:
                        at_deadline, wait = True, max(deadline - time.monotonic(), 0.0)
                    guard.reschedule(loop.time() + wait)
                    try:
                        sse = await anext(events)
                    except StopAsyncIteration:
                        break
                    guard.reschedule(None)
                    data = sse.data
                    if not data:
                        # A comment-only block: httpx_sse dispatches it, the SSE spec does not.
                        continue
                    if data == "[DONE]":
                        if finish_reason is None:
                            raise UpstreamProtocolError(
                                "the model stream ended without a finish reason"
                            )
                        yield Completion(
                            finish_reason=finish_reason,
                            usage=usage,
                            tool_calls=tuple(
                                ToolCall(id=c[0], name=c[1], arguments="".join(c[2]))
                                for _, c in sorted(calls.items())
                            ),
                        )
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise UpstreamProtocolError(
                            "the model provider sent a chunk that is not JSON"
                        ) from None
                    if not isinstance(chunk, dict):
                        raise UpstreamProtocolError(
                            "the model provider sent a chunk that is not an object"
                        )
                    if chunk.get("error"):
                        message = _error_message(chunk, self._redact)
                        raise UpstreamRejected(message or "the model provider reported an error")
                    # A chunk of the right shape but wrong types (a null delta, a numeric content)
                    # is a protocol error like malformed JSON, never an unhandled exception.
                    try:
                        if chunk.get("usage"):
                            raw = chunk["usage"]
                            usage = Usage(
                                int(raw.get("prompt_tokens") or 0),
                                int(raw.get("completion_tokens") or 0),
                            )
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta") or {}
                            content = delta.get("content")
                            if content:
                                started = True
                                yield TextDelta(_unicode(_string(content)))
                            for fragment in delta.get("tool_calls") or ():
                                started = True
                                index = fragment.get("index", 0)
                                if not isinstance(index, int):
                                    raise TypeError("tool call index")
                                function = fragment.get("function") or {}
                                call = calls.get(index)
                                if call is None:
                                    call_id = _string(fragment.get("id") or "")
                                    name = _string(function.get("name") or "")
                                    call = calls[index] = [call_id, name, []]
                                    yield ToolCallBegan(id=call_id, name=name)
                                if function.get("arguments"):
                                    call[2].append(_string(function["arguments"]))
                            if choice.get("finish_reason"):
                                finish_reason = _string(choice["finish_reason"])
                    except (AttributeError, TypeError, ValueError):
                        raise UpstreamProtocolError(
                            "the model provider sent a chunk this server does not understand"
                        ) from None
        except TimeoutError:
            if at_deadline:
                raise TurnDeadline() from None
            raise UpstreamTimeout(
                "the model provider stopped sending tokens"
                if started
                else "the model provider did not start answering in time"
            ) from None
        raise UpstreamProtocolError("the model provider closed the stream before it finished")


def _unicode(text: str) -> str:
    """A lone surrogate (JSON may carry `\\ud800`) becomes U+FFFD: no store takes one."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _status_error(response: httpx.Response, redact: Redactor) -> Exception:
    code = response.status_code
    if code in (401, 403):
        # The provider's own message often quotes part of the key: never pass it on.
        return UpstreamAuthError(
            f"the model provider rejected the API key (HTTP {code}); check OPENAI_API_KEY"
        )
    if code == 429:
        return _Retry(
            UpstreamRateLimited("the model provider is rate limiting requests; try again shortly"),
            _retry_after(response),
        )
    if code in _RETRYABLE or code >= 500:
        return _Retry(
            UpstreamUnavailable(f"the model provider failed (HTTP {code}); try again shortly"),
            _retry_after(response),
        )
    detail = _error_message(_json_or_empty(response), redact)
    suffix = f": {detail}" if detail else ""
    return UpstreamRejected(f"the model provider refused the request (HTTP {code}){suffix}")


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait from Retry-After (seconds or an HTTP date); -1 = use backoff."""
    value = response.headers.get("retry-after")
    if not value:
        return -1
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return -1
    return max(seconds, 0.0)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_message(payload: dict[str, Any], redact: Redactor) -> str:
    """The provider's error text, secrets redacted (before it is cut, so no part escapes)."""
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return redact(str(error or ""))[:300]
