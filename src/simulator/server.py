"""The simulator's state (reply queue, request log) and its OpenAI-compatible app.

Tests, the benchmark and the browser tests talk to it over HTTP exactly as they would talk to
OpenAI's Chat Completions API, so the streaming client is exercised byte for byte. Replies are
queued with `Simulator.script(...)` (or `POST /_sim/script`); with an empty queue the core's
simulated model decides (text, calculator and time tool calls). Never mounted in the served app:
its control routes have no guard.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from simulator.agent import default_reply, default_text, word_count
from simulator.openai_errors import (
    bad_request,
    context_length_exceeded,
    error_chunk_body,
    http_fault,
    unauthorized,
)
from simulator.replies import (
    STREAM_FAULTS,
    LogEntry,
    Plan,
    Reply,
    check_reply,
    content_chunks,
    fragments,
    reasoning_chunks,
)
from simulator.wire import SimulatedStream, Wire, compact, quiet_deliberate_cuts

DEFAULT_MODEL = "simulator"
_LOG_LIMIT = 1000


async def _pace(next_at: float) -> None:
    wait = next_at - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


class Simulator:
    """The simulator's state: the reply queue and the request log."""

    def __init__(
        self,
        *,
        token_delay_ms: float = 25.0,
        api_key: str | None = None,
        context_tokens: int | None = None,
    ) -> None:
        self.token_delay_ms = token_delay_ms
        self.api_key = api_key
        # The model's context window: a longer prompt is refused (None: no limit).
        self.context_tokens = context_tokens
        self.log: list[LogEntry] = []
        self.open_streams = 0
        self._queue: deque[list[Any]] = deque()  # [reply, uses left]

    def script(self, *replies: Reply | Mapping[str, Any]) -> None:
        """Queue replies; each request pops the next one (a reply with `times: n` serves n)."""
        checked = [check_reply(reply) for reply in replies]
        for reply in checked:
            self._queue.append([reply, reply.get("times", 1)])

    def reset(self) -> None:
        """Forget queued replies and the log."""
        self._queue.clear()
        self.log.clear()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _next_reply(self) -> Reply | None:
        if not self._queue:
            return None
        slot = self._queue[0]
        slot[1] -= 1
        if slot[1] <= 0:
            self._queue.popleft()
        return cast(Reply, slot[0])

    def _new_entry(self, body: Any, authorization: str | None) -> LogEntry:
        entry: LogEntry = {
            "body": body,
            "authorization": authorization,
            "started_at": time.monotonic(),
            "outcome": "open",
            "status": 200,
            "chunks_sent": 0,
            "closed_at": None,
        }
        self.log.append(entry)
        if len(self.log) > _LOG_LIMIT:
            del self.log[: len(self.log) - _LOG_LIMIT]
        return entry

    def authorized(self, authorization: str | None) -> bool:
        return self.api_key is None or authorization == f"Bearer {self.api_key}"

    async def chat_completions(self, raw: bytes, authorization: str | None) -> Response:
        """Answer one `POST /v1/chat/completions`."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        entry = self._new_entry(body, authorization)
        response = await self._answer(body, authorization, entry)
        entry["status"] = response.status_code
        if not isinstance(response, SimulatedStream):
            entry["closed_at"] = time.monotonic()
            if entry["outcome"] == "open":
                entry["outcome"] = (
                    "completed" if response.status_code == 200 else str(response.status_code)
                )
        return response

    async def _answer(self, body: Any, authorization: str | None, entry: LogEntry) -> Response:
        if not self.authorized(authorization):
            return unauthorized(authorization)
        if not isinstance(body, dict):
            return bad_request("We could not parse the JSON body of your request.")
        if not isinstance(body.get("messages"), list):
            return bad_request("Missing required parameter: 'messages'.", "messages")
        model = body["model"] if isinstance(body.get("model"), str) else DEFAULT_MODEL
        prompt_tokens = word_count(body)
        if self.context_tokens is not None and prompt_tokens > self.context_tokens:
            # Refused before any reply is chosen, as a provider refuses before generating.
            entry["outcome"] = "context_length_exceeded"
            return context_length_exceeded(self.context_tokens, prompt_tokens)
        reply = self._next_reply() or default_reply(body)
        fault = reply.get("fault")
        if fault is not None and fault not in STREAM_FAULTS:
            entry["outcome"] = fault
            return http_fault(reply, authorization, model)
        plan = self._plan(reply, body, model)
        if body.get("stream") is True:
            return SimulatedStream(self._stream(plan, entry), counter=self, entry=entry, plan=plan)
        return await self._complete(plan, entry)

    def _plan(self, reply: Reply, body: dict[str, Any], model: str) -> Plan:
        if reply.get("fault") in STREAM_FAULTS and not (
            "content" in reply or "chunks" in reply or "tool_calls" in reply or "stamp" in reply
        ):
            reply = {**reply, "content": default_text(body)}
        calls = [
            (
                call.get("id") or f"call_{secrets.token_hex(12)}",
                call["name"],
                fragments(call.get("arguments", "")),
            )
            for call in reply.get("tool_calls", [])
        ]
        content_count = reply.get("count", 20) if reply.get("stamp") else len(content_chunks(reply))
        thoughts = len(reasoning_chunks(reply))
        completion_tokens = content_count + thoughts + sum(len(f) for _, _, f in calls)
        overrides = reply.get("usage", {})
        usage: dict[str, Any] = {
            "prompt_tokens": word_count(body),
            "completion_tokens": completion_tokens,
            **(overrides if isinstance(overrides, dict) else {}),
        }
        if thoughts:
            usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        stream_options = body.get("stream_options")
        delay_ms = reply.get("delay_ms", self.token_delay_ms)
        return Plan(
            reply=reply,
            model=model,
            include_usage=isinstance(stream_options, dict)
            and stream_options.get("include_usage") is True
            and reply.get("usage") is not False,
            delay=max(0.0, float(delay_ms)) / 1000,
            usage=usage,
            tool_calls=calls,
        )

    async def _stream(self, plan: Plan, entry: LogEntry) -> AsyncGenerator[bytes, None]:
        reply = plan.reply
        wire = Wire(reply.get("wire", {}))
        fault = reply.get("fault")
        deltas = list(_deltas(plan))
        # The fault fires before delta number `at` (-1: before anything, len: before the finish).
        after = reply.get("after_chunks")
        at: int | None = None
        if fault in ("cut", "malformed", "stall", "error_chunk"):
            default_after = -1 if fault == "stall" else (3 if fault == "cut" else len(deltas))
            at = min(after if after is not None else default_after, len(deltas))
        finish_reason = reply.get("finish_reason", "tool_calls" if plan.tool_calls else "stop")

        head = (
            '{"id":' + json.dumps(f"chatcmpl-{secrets.token_hex(14)}")
            + ',"object":"chat.completion.chunk","created":' + str(int(time.time()))
            + ',"model":' + compact(plan.model)
            + ',"service_tier":"default","system_fingerprint":"fp_simulator","choices":'
        )  # fmt: skip
        tail = ',"usage":null}' if plan.include_usage else "}"
        first = True

        def chunk(delta: str, finish: str | None = None) -> str:
            reason = "null" if finish is None else json.dumps(finish)
            return (
                f'{head}[{{"index":0,"delta":{delta},"logprobs":null,'
                f'"finish_reason":{reason}}}]{tail}'
            )

        def frame(payload: str | bytes) -> list[bytes]:
            nonlocal first
            data = payload if isinstance(payload, bytes) else wire.event(payload)
            if wire.comment and not first:
                data = wire.comment.encode() + data
            first = False
            if wire.split and len(data) > 1:
                return [data[: len(data) // 2], data[len(data) // 2 :]]
            return [data]

        if at == -1:
            await asyncio.sleep(float(reply.get("stall_seconds", 60)))
        if fault == "drop":
            # The response headers went out; the connection closes before any chunk.
            plan.cut = True
            entry["outcome"] = "drop"
            return
        for part in frame(chunk('{"role":"assistant","content":""}')):
            yield part
        next_at = time.monotonic()
        for index in range(len(deltas) + 1):
            if index == at:
                if fault == "cut":
                    plan.cut = True
                    entry["outcome"] = "cut"
                    return
                if fault == "malformed":
                    for part in frame("{not json"):
                        yield part
                if fault == "error_chunk":
                    # A provider failing mid-stream: one `{"error"}` chunk, then the body ends.
                    for part in frame(compact(error_chunk_body(reply))):
                        yield part
                    entry["outcome"] = fault
                    return
                if fault == "stall":
                    await asyncio.sleep(float(reply.get("stall_seconds", 60)))
                    next_at = time.monotonic()
            if index == len(deltas):
                break
            if plan.delay:
                next_at += plan.delay
                await _pace(next_at)
            delta = deltas[index]
            if delta is None:
                delta = '{"content":"' + str(time.monotonic_ns()) + ' "}'
            for part in frame(chunk(delta)):
                yield part
            entry["chunks_sent"] = index + 1
        if fault != "no_finish":
            for part in frame(chunk("{}", finish_reason)):
                yield part
        if plan.include_usage:
            usage = compact(plan.usage)
            for part in frame(f'{head}[],"usage":{usage}}}'):
                yield part
        if fault != "no_done":
            for part in frame(wire.done):
                yield part
        entry["outcome"] = fault or "completed"

    async def _complete(self, plan: Plan, entry: LogEntry) -> Response:
        """A non-streamed `chat.completion` (faults: stall waits, the others shape the body)."""
        reply = plan.reply
        fault = reply.get("fault")
        if fault == "stall":
            await asyncio.sleep(float(reply.get("stall_seconds", 60)))
        if fault == "error_chunk":
            entry["outcome"] = fault
            return JSONResponse(error_chunk_body(reply), status_code=500)
        if fault in ("malformed", "cut", "drop"):
            entry["outcome"] = fault
            truncated = b'{"id": "chatcmpl-x", "choices": [{not json'
            return Response(truncated, media_type="application/json")
        content = "".join(content_chunks(reply)) if not reply.get("stamp") else None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if plan.tool_calls:
            message["tool_calls"] = [
                {"id": id_, "type": "function", "function": {"name": name, "arguments": "".join(f)}}
                for id_, name, f in plan.tool_calls
            ]
            message["content"] = content or None
        finish = reply.get("finish_reason", "tool_calls" if plan.tool_calls else "stop")
        entry["outcome"] = fault or "completed"
        entry["chunks_sent"] = 0
        return JSONResponse(
            {
                "id": f"chatcmpl-{secrets.token_hex(14)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": plan.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": None if fault == "no_finish" else finish,
                    }
                ],
                "usage": plan.usage,
                "service_tier": "default",
                "system_fingerprint": "fp_simulator",
            }
        )


def _deltas(plan: Plan) -> Iterator[str | None]:
    """Delta JSON texts in order; None means "a stamp", made at the moment it is sent."""
    reply = plan.reply
    field = reply.get("reasoning_field", "reasoning_content")
    for text in reasoning_chunks(reply):
        yield compact({field: text})
    if reply.get("stamp"):
        yield from (None for _ in range(reply.get("count", 20)))
    else:
        for text in content_chunks(reply):
            yield '{"content":' + compact(text) + "}"
    for index, (call_id, name, pieces) in enumerate(plan.tool_calls):
        function = {"name": name, "arguments": ""}
        call = {"index": index, "id": call_id, "type": "function", "function": function}
        yield compact({"tool_calls": [call]})
        for fragment in pieces:
            piece = {"index": index, "function": {"arguments": fragment}}
            yield compact({"tool_calls": [piece]})


def create_simulator(
    *, token_delay_ms: float = 25.0, api_key: str | None = None, context_tokens: int | None = None
) -> FastAPI:
    """A standalone OpenAI-compatible app; `app.state.simulator` is its `Simulator`."""
    simulator = Simulator(
        token_delay_ms=token_delay_ms, api_key=api_key, context_tokens=context_tokens
    )
    app = FastAPI(
        title="OpenAI-compatible simulator", openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.simulator = simulator
    quiet_deliberate_cuts()

    @app.post("/v1/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        return await simulator.chat_completions(raw, request.headers.get("authorization"))

    @app.get("/v1/models", include_in_schema=False)
    async def models(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        if not simulator.authorized(authorization):
            return unauthorized(authorization)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "sse-chat-agent-simulator"}
            for name in (DEFAULT_MODEL, "gpt-4.1-mini")
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/_sim/script", include_in_schema=False)
    async def script(request: Request) -> Response:
        try:
            replies = json.loads(await request.body())
            if isinstance(replies, dict):
                replies = [replies]
            if not isinstance(replies, list):
                raise ValueError("send a list of reply objects")
            simulator.script(*replies)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"queued": simulator.queued})

    @app.post("/_sim/reset", include_in_schema=False)
    async def reset() -> Response:
        simulator.reset()
        return JSONResponse({"queued": 0})

    @app.get("/_sim/log", include_in_schema=False)
    async def log() -> Response:
        return JSONResponse(simulator.log)

    return app
