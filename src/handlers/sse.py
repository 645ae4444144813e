"""The wire format: the only place that knows how core events look on the SSE stream."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.sse import ServerSentEvent

from core.events import Done, Event, Failed, Started, Token, ToolCallStarted, ToolResult

_SURROGATE = re.compile("[\ud800-\udfff]")


def payload(event: Event) -> dict[str, Any]:
    """The JSON object one event carries (DESIGN §4)."""
    match event:
        case Token(text=text):
            return {"token": text}
        case Started(session=session, model=model):
            return {"lifecycle": "started", "session": session, "model": model}
        case ToolCallStarted(id=call_id, name=name):
            return {"tool_call": {"id": call_id, "name": name}}
        case ToolResult(id=call_id, name=name, ok=ok, output=output):
            return {"tool_result": {"id": call_id, "name": name, "ok": ok, "output": output}}
        case Failed(message=message):
            return {"error": message}
        case Done(finish_reason=reason, usage=usage):
            return {
                "lifecycle": "done",
                "finish_reason": reason,
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                },
            }
    raise TypeError(f"not an event: {event!r}")


def to_sse(event: Event, seq: int) -> ServerSentEvent:
    """One unnamed SSE message (`onmessage` sees it) with a strictly increasing `id`.

    `model_construct` skips pydantic validation on the per-token hot path: the id is digits
    and `json.dumps` never emits a raw newline, so there is nothing to validate.
    """
    data = json.dumps(payload(event), ensure_ascii=False)
    if not data.isascii() and _SURROGATE.search(data):
        # A lone surrogate (a model may send `\ud800` in its JSON) cannot be UTF-8 encoded:
        # escape it instead, so the wire stays valid and JSON.parse gets the same string.
        data = json.dumps(payload(event))
    return ServerSentEvent.model_construct(raw_data=data, id=str(seq))
