"""The rules every `SessionStore` applies alike: message size, TTL, the history window.

Kept out of the adapters so the memory, SQLite and DynamoDB stores cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from core.errors import InvalidRequest, MessageTooLarge
from core.model.messages import Message, ToolCall

# DynamoDB items are limited to 400 KB (names and values); this leaves room for the other
# attributes. Counted as UTF-8 bytes of the content, the reasoning and the tool_calls JSON.
MAX_MESSAGE_BYTES = 350_000

# DynamoDB transactions hold at most 100 items: the messages plus the session's meta item.
MAX_APPEND_MESSAGES = 99


def expires_at(now: float, ttl_seconds: float) -> int:
    """The TTL instant in whole epoch seconds (DynamoDB's TTL attribute), never before now+ttl."""
    return math.ceil(now + ttl_seconds)


def encode_tool_calls(tool_calls: Sequence[ToolCall]) -> str | None:
    """Tool calls as the JSON text the durable stores keep (None when there are none)."""
    if not tool_calls:
        return None
    return json.dumps(
        [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in tool_calls],
        ensure_ascii=False,
    )


def decode_tool_calls(text: str | None) -> tuple[ToolCall, ...]:
    if not text:
        return ()
    return tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in json.loads(text))


def is_valid_unicode(text: str) -> bool:
    """False for a lone surrogate, which no store (and no UTF-8 encoder) takes."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def truncate_utf8(text: str, limit_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `limit_bytes`."""
    return text.encode("utf-8", "replace")[:limit_bytes].decode("utf-8", "ignore")


def message_bytes(message: Message) -> int:
    """The stored size that counts against MAX_MESSAGE_BYTES; `InvalidRequest` for non-UTF-8."""
    try:
        size = len(message.content.encode("utf-8"))
        size += len(message.reasoning.encode("utf-8"))
        size += len((encode_tool_calls(message.tool_calls) or "").encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate: neither SQLite nor DynamoDB takes it
        raise InvalidRequest("message text is not valid Unicode") from exc
    return size


def check_appendable(messages: Sequence[Message]) -> None:
    """Refuse a batch before anything is written: too many messages, or one too large."""
    if len(messages) > MAX_APPEND_MESSAGES:
        raise ValueError(f"append takes at most {MAX_APPEND_MESSAGES} messages at once")
    for message in messages:
        size = message_bytes(message)
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(size, MAX_MESSAGE_BYTES)


def visible_window(
    stored: Sequence[tuple[Message, float]], *, now: float, limit: int | None
) -> tuple[Message, ...]:
    """What `load` returns from stored `(message, expires_at)` pairs, oldest first.

    - TTL: only the suffix after the newest expired message is live. Expiry normally drops a
      prefix anyway (each append refreshes it); taking the suffix keeps the history contiguous
      even if writers' clocks disagree.
    - Window: the last `limit` live messages (all when None, none when <= 0).
    - Never start with `tool` results whose assistant `tool_calls` message fell outside: the
      Chat Completions API rejects such a conversation.
    """
    start = 0
    for index, (_, expiry) in enumerate(stored):
        if expiry <= now:
            start = index + 1
    if limit is not None:
        start = max(start, len(stored) - max(limit, 0))
    while start < len(stored) and stored[start][0].role == "tool":
        start += 1
    return tuple(message for message, _ in stored[start:])


def page_window(
    newest_first: Sequence[tuple[int, Message, float]], *, now: float, limit: int
) -> tuple[tuple[Message, ...], int | None]:
    """A page from stored `(seq, message, expires_at)` triples, newest first, holding at least
    `limit + 1` live ones when more exist: the newest `limit` live messages oldest first, and
    the cursor (the oldest one's sequence) when older live messages remain."""
    live = [(seq, message) for seq, message, expiry in newest_first if expiry > now]
    shown = live[:limit]
    older = shown[-1][0] if len(live) > limit and shown else None
    return tuple(message for _, message in reversed(shown)), older
