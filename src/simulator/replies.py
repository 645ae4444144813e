"""The reply schema: what a test may script, checked so that a typo fails loudly.

Reply objects (plain dicts, JSON-compatible; see `Reply`):

- `{"content": "Hello world"}` or `{"chunks": ["Hel", "lo"]}`: a streamed text answer.
  Optional `finish_reason`, `delay_ms` (per-chunk pace), `usage` (`prompt_tokens`,
  `completion_tokens`; or `false`: no usage chunk even when `stream_options.include_usage`
  asks, as several servers do), `stamp` + `count` (each chunk is
  `str(time.monotonic_ns()) + " "`).
- `{"tool_calls": [{"name": ..., "arguments": "<raw text>", "id"?: ...}], "content"?: ...}`.
- `{"fault": "401" | "429" | "500" | any 4xx/5xx | "cut" | "drop" | "malformed" | "stall"
  | "no_finish" | "no_done" | "error_chunk"}` with `after_chunks`, `retry_after` (429: seconds,
  sent as `retry-after` and `retry-after-ms`), `retry_after_ms` (429: its own `retry-after-ms`),
  `stall_seconds`; `times: n` reuses a reply n times. `drop`: the response headers, then the
  connection closes before any chunk; `no_done`: the whole reply with its finish reason (and
  usage), then the body ends without `data: [DONE]`. `error_message` is the text of an HTTP
  fault's error body or of the `error_chunk` (an `{"error": {...}}` chunk mid-stream, as
  providers send on a late failure).
- `wire`: `{"crlf": true, "comments": true, "nospace": true, "split": true}`.

A context window is simulator-wide (`Simulator(context_tokens=N)`, `--context-tokens N`): a
request whose prompt is over N tokens (counted as `prompt_tokens` is: words of the messages'
text) gets OpenAI's 400 `context_length_exceeded`, and no scripted reply is used up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, cast

from core.model.simulated import split_words

__all__ = [
    "FAULTS",
    "STREAM_FAULTS",
    "LogEntry",
    "Plan",
    "Reply",
    "ToolCallSpec",
    "WireOptions",
    "check_reply",
    "content_chunks",
    "fragments",
    "split_words",
]


class ToolCallSpec(TypedDict):
    """One scripted tool call; `arguments` is raw text, so it may be malformed JSON on purpose."""

    name: str
    arguments: str
    id: NotRequired[str]


class WireOptions(TypedDict, total=False):
    """Byte-level variations a conforming SSE client must accept."""

    crlf: bool  # CRLF line endings
    comments: bool  # ": keep-alive" comment blocks between events
    nospace: bool  # "data:{...}" without the space
    split: bool  # every event written in two parts, cut mid-JSON (maybe mid-UTF-8 character)


class Reply(TypedDict, total=False):
    """One scripted reply; each request pops the next one from the queue."""

    content: str
    chunks: list[str]
    finish_reason: str
    delay_ms: float
    usage: dict[str, int] | bool  # False: no usage chunk, whatever the request asks
    tool_calls: list[ToolCallSpec]
    fault: str
    error_message: str
    times: int
    after_chunks: int
    retry_after: float
    retry_after_ms: float
    stall_seconds: float
    wire: WireOptions
    stamp: bool
    count: int
    reasoning: str  # streamed word by word before the content, as reasoning deltas
    reasoning_field: str  # "reasoning_content" (DeepSeek, vLLM; the default) or "reasoning"


REASONING_FIELDS = frozenset({"reasoning_content", "reasoning"})


class LogEntry(TypedDict):
    """What the simulator saw of one request and how the response ended."""

    body: Any  # the request JSON (None when the body was not JSON)
    authorization: str | None
    started_at: float  # time.monotonic()
    outcome: str  # "open" while streaming, then "completed", "client_closed" or the fault name
    status: int
    chunks_sent: int  # content and tool-call delta chunks actually handed to the server
    closed_at: float | None  # time.monotonic() when the response ended, for any reason


@dataclass(slots=True)
class Plan:
    """Everything one response needs, decided before the first byte."""

    reply: Reply
    model: str
    include_usage: bool
    delay: float
    usage: dict[str, Any]
    tool_calls: list[tuple[str, str, list[str]]] = field(default_factory=list)
    cut: bool = False  # set when the stream drops the connection on purpose


STREAM_FAULTS = frozenset(
    {"cut", "drop", "malformed", "stall", "no_finish", "no_done", "error_chunk"}
)
FAULTS = frozenset({"401", "429", "500"}) | STREAM_FAULTS
_REPLY_KEYS = frozenset(Reply.__annotations__)
_WIRE_KEYS = frozenset(WireOptions.__annotations__)
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens"})
_HTTP_FAULT = re.compile(r"[45]\d\d")


def check_reply(reply: Mapping[str, Any]) -> Reply:
    """Refuse a reply with unknown keys or fault names, so a typo in a test fails loudly."""
    if not isinstance(reply, Mapping):
        raise ValueError("a reply must be a JSON object")
    unknown = set(reply) - _REPLY_KEYS
    if unknown:
        raise ValueError(f"unknown reply keys: {sorted(unknown)}")
    fault = reply.get("fault")
    if fault is not None and fault not in FAULTS and not _HTTP_FAULT.fullmatch(str(fault)):
        raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)} or any 4xx/5xx")
    wire = reply.get("wire", {})
    if not isinstance(wire, Mapping) or set(wire) - _WIRE_KEYS:
        raise ValueError(f"wire options are {sorted(_WIRE_KEYS)}")
    chunks = reply.get("chunks")
    if chunks is not None and not (
        isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
    ):
        raise ValueError("chunks must be a list of strings")
    if not isinstance(reply.get("error_message", ""), str):
        raise ValueError("error_message must be a string")
    if not isinstance(reply.get("reasoning", ""), str):
        raise ValueError("reasoning must be a string")
    if reply.get("reasoning_field", "reasoning_content") not in REASONING_FIELDS:
        raise ValueError(f"reasoning_field is one of {sorted(REASONING_FIELDS)}")
    for call in reply.get("tool_calls", []):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise ValueError("each tool call needs a name")
        if not isinstance(call.get("arguments", ""), str):
            raise ValueError("tool call arguments are raw text (a string)")
    usage = reply.get("usage", {})
    if usage is not False and not (
        isinstance(usage, Mapping)
        and set(usage) <= _USAGE_KEYS
        and all(type(v) is int and v >= 0 for v in usage.values())
    ):
        raise ValueError(f"usage is false or an object of counts: {sorted(_USAGE_KEYS)}")
    for key in ("retry_after", "retry_after_ms", "stall_seconds", "delay_ms"):
        value = reply.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key} must be a number >= 0")
    times = reply.get("times", 1)
    if not isinstance(times, int) or times < 1:
        raise ValueError("times must be a positive integer")
    return cast(Reply, dict(reply))


def reasoning_chunks(reply: Reply) -> list[str]:
    return split_words(reply.get("reasoning", ""))


def content_chunks(reply: Reply) -> list[str]:
    """The reply's text as it is streamed: its `chunks`, else its `content` word by word."""
    if "chunks" in reply:
        return list(reply["chunks"])
    return split_words(reply.get("content", ""))


def fragments(arguments: str) -> list[str]:
    """Split tool-call arguments into 2+ fragments (given 2+ characters), as OpenAI does."""
    if len(arguments) < 2:
        return [arguments] if arguments else []
    size = max(1, min(8, len(arguments) // 2))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]
