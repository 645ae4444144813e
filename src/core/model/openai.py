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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx
from httpx_sse import SSEError, aconnect_sse

from core.errors import (
    ContextTooLong,
    TurnDeadline,
    UpstreamAuthError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from core.events import Reasoning, Token, ToolCallStarted, Usage
from core.model.messages import Message, ToolCall, ToolSpec
from core.model.port import Completion, ModelEvent
from core.redaction import Redactor

ApiKeyProvider = Callable[[], Awaitable[str | None]]

_SURROGATE = re.compile("[\ud800-\udfff]")
_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})
# How providers say a request is over the context window (OpenAI's code, then the messages of
# OpenAI, Anthropic, Mistral, vLLM, llama.cpp, Ollama, Groq and Gemini).
_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded"})
_CONTEXT_MESSAGE = re.compile(
    r"context[ _-]?(length|window)|maximum context|prompt is too long|too many tokens"
    r"|exceeds? the (available )?context|input is too long|reduce the length"
    r"|maximum number of tokens allowed",
    re.IGNORECASE,
)
_STATED_WINDOW = re.compile(
    r"maximum context length is (\d[\d,]*) tokens|tokens? > (\d[\d,]*) maximum"
    r"|tokens allowed \((\d[\d,]*)\)",
    re.IGNORECASE,
)
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
        reasoning_history: str = "auto",
        reasoning_effort: str = "",
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
        self._reasoning_history = reasoning_history
        self._reasoning_effort = reasoning_effort

    @property
    def name(self) -> str:
        return self._name

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [
                message_json(m, with_reasoning=self._sends_reasoning(m)) for m in messages
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            self._max_tokens_field: self._max_tokens,
        }
        if tools:
            body["tools"] = [tool_json(spec) for spec in tools]
        if self._reasoning_effort:
            body["reasoning_effort"] = self._reasoning_effort
        return body

    def _sends_reasoning(self, message: Message) -> bool:
        """REASONING_HISTORY: `auto` sends reasoning back only on assistant messages that called
        tools, which DeepSeek's API requires ("reasoning_content must be passed back") and
        OpenAI-compatible servers ignore; `always` on every assistant message; `never` not."""
        if message.role != "assistant" or not message.reasoning:
            return False
        if self._reasoning_history == "always":
            return True
        return self._reasoning_history == "auto" and bool(message.tool_calls)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
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
            # A drop: worth another try if nothing was relayed yet (`stream` decides).
            raise _Retry(
                UpstreamProtocolError("the model provider closed the stream before it finished"),
                -1,
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
        """The step's events from the provider's SSE events, under the stream's timeouts."""
        chunks = ChunkAssembler(self._redact)
        at_deadline = False
        loop = asyncio.get_running_loop()
        try:
            # One timer for the whole stream, armed around each wait and disarmed while a chunk
            # is handed on (a slow consumer must not trip it): anyio.fail_after per chunk cost
            # twice as much on the per-token path (make bench).
            async with asyncio.timeout(None) as guard:
                while True:
                    wait = self._idle_timeout if chunks.started else self._first_token_timeout
                    if deadline is not None and deadline - time.monotonic() <= wait:
                        at_deadline, wait = True, max(deadline - time.monotonic(), 0.0)
                    guard.reschedule(loop.time() + wait)
                    try:
                        sse = await anext(events)
                    except StopAsyncIteration:
                        if chunks.finish_reason is not None:
                            # A finish reason without `[DONE]` (some servers omit it): whole.
                            yield chunks.completion()
                            return
                        break
                    guard.reschedule(None)
                    data = sse.data
                    if not data:
                        # A comment-only block: httpx_sse dispatches it, the SSE spec does not.
                        continue
                    if data == "[DONE]":
                        yield chunks.completion()
                        return
                    for event in chunks.feed(data):
                        yield event
        except TimeoutError:
            if at_deadline:
                raise TurnDeadline() from None
            raise UpstreamTimeout(
                "the model provider stopped sending tokens"
                if chunks.started
                else "the model provider did not start answering in time"
            ) from None
        if not chunks.started:
            # The body ended before anything came: a drop, retried like one.
            raise _Retry(
                UpstreamProtocolError("the model provider closed the stream before it finished"),
                -1,
            )
        raise UpstreamProtocolError("the model provider closed the stream before it finished")


@dataclass(slots=True)
class _PendingCall:
    """A tool call being streamed: its arguments arrive in fragments."""

    id: str
    name: str
    fragments: list[str] = field(default_factory=list)


class ChunkAssembler:
    """Chat Completions chunks in, model events out: text and reasoning as they come, a tool
    call announced at its first fragment and assembled (by index) until the step completes.

    Any chunk of the wrong shape or types (not JSON, a null delta, a numeric content) is an
    `UpstreamProtocolError`, never an unhandled exception; an error chunk is the provider's
    refusal (`UpstreamRejected`, or `ContextTooLong`).
    """

    def __init__(self, redact: Redactor) -> None:
        self.finish_reason: str | None = None
        self.usage: Usage | None = None  # None until the provider reports it
        self.started = False  # text, reasoning or a tool call has arrived
        self._calls: dict[int, _PendingCall] = {}
        self._redact = redact

    def feed(self, data: str) -> Iterator[ModelEvent]:
        """The events in one SSE `data` field (not `[DONE]`)."""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise UpstreamProtocolError(
                "the model provider sent a chunk that is not JSON"
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError("the model provider sent a chunk that is not an object")
        if chunk.get("error"):
            if _is_context_error(chunk):
                raise _context_too_long(chunk)
            message = _error_message(chunk, self._redact)
            raise UpstreamRejected(message or "the model provider reported an error")
        try:
            if chunk.get("usage"):
                self.usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                yield from self._choice(choice)
        except (AttributeError, TypeError, ValueError):
            raise UpstreamProtocolError(
                "the model provider sent a chunk this server does not understand"
            ) from None

    def completion(self) -> Completion:
        """The step's end, its tool calls whole; a stream without a finish reason is cut."""
        if self.finish_reason is None:
            raise UpstreamProtocolError("the model stream ended without a finish reason")
        return Completion(
            finish_reason=self.finish_reason,
            usage=self.usage,
            tool_calls=tuple(
                ToolCall(id=call.id, name=call.name, arguments="".join(call.fragments))
                for _, call in sorted(self._calls.items())
            ),
        )

    def _choice(self, choice: dict[str, Any]) -> Iterator[ModelEvent]:
        delta = choice.get("delta") or {}
        # DeepSeek, vLLM and llama.cpp say `reasoning_content`; OpenRouter, Ollama and LiteLLM
        # say `reasoning`. Either is reasoning, not reply.
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if thought:
            self.started = True
            yield Reasoning(_unicode(_string(thought)))
        content = delta.get("content")
        if content:
            self.started = True
            yield Token(_unicode(_string(content)))
        for fragment in delta.get("tool_calls") or ():
            self.started = True
            yield from self._tool_fragment(fragment)
        if choice.get("finish_reason"):
            self.finish_reason = _string(choice["finish_reason"])

    def _tool_fragment(self, fragment: dict[str, Any]) -> Iterator[ModelEvent]:
        index = fragment.get("index", 0)
        if not isinstance(index, int):
            raise TypeError("tool call index")
        function = fragment.get("function") or {}
        call = self._calls.get(index)
        if call is None:
            call = _PendingCall(
                id=_string(fragment.get("id") or ""), name=_string(function.get("name") or "")
            )
            self._calls[index] = call
            yield ToolCallStarted(id=call.id, name=call.name)
        if function.get("arguments"):
            call.fragments.append(_string(function["arguments"]))


def _is_context_error(payload: dict[str, Any]) -> bool:
    error = payload.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return code in _CONTEXT_CODES or bool(_CONTEXT_MESSAGE.search(str(message or "")))


def _context_too_long(payload: dict[str, Any]) -> ContextTooLong:
    return ContextTooLong(
        "the conversation is too long for the model's context window; "
        "start a new chat or send a shorter message",
        window=_stated_window(payload),
    )


def _stated_window(payload: dict[str, Any]) -> int | None:
    """The context window a refusal states: llama.cpp's `n_ctx`, else the number in OpenAI's
    (vLLM's, Groq's, Together's) "maximum context length is N tokens", Anthropic's
    "N tokens > M maximum" or Gemini's "tokens allowed (N)"."""
    error = payload.get("error")
    if isinstance(error, dict):
        n_ctx = error.get("n_ctx")
        if type(n_ctx) is int and n_ctx > 0:
            return n_ctx
        error = error.get("message")
    match = _STATED_WINDOW.search(str(error or ""))
    if match is None:
        return None
    window = int(next(g for g in match.groups() if g).replace(",", ""))
    return window if window > 0 else None


def message_json(message: Message, *, with_reasoning: bool = False) -> dict[str, Any]:
    """A message as the Chat Completions API takes it (no status, no time).

    `with_reasoning`: its reasoning goes back as `reasoning_content` (DeepSeek's and vLLM's
    field), for providers that require it (REASONING_HISTORY).
    """
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if with_reasoning and message.reasoning:
        out["reasoning_content"] = message.reasoning
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
        if not message.content:
            out["content"] = None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_json(spec: ToolSpec) -> dict[str, Any]:
    """A tool as the Chat Completions `tools` list declares it."""
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    return {"type": "function", "function": function}


def _usage(raw: dict[str, Any]) -> Usage:
    details = raw.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(
        int(raw.get("prompt_tokens") or 0),
        int(raw.get("completion_tokens") or 0),
        None if reasoning is None else int(reasoning),
    )


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
    body = _json_or_empty(response)
    if code in (400, 413, 422) and _is_context_error(body):
        return _context_too_long(body)
    detail = _error_message(body, redact)
    suffix = f": {detail}" if detail else ""
    return UpstreamRejected(f"the model provider refused the request (HTTP {code}){suffix}")


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait from retry-after-ms (OpenAI's, exact) or Retry-After (seconds or an
    HTTP date); -1 = use backoff."""
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
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
