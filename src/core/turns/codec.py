"""The turn log's codec: typed events <-> small JSON-able values (the SSE wire is elsewhere).

A token, by far the most common event, is its bare text; every other event is an object with
a `type`.
"""

from __future__ import annotations

import json
import re
from typing import Any, assert_never

from core.events import (
    Done,
    Event,
    Failed,
    Reasoning,
    Started,
    Token,
    ToolCallStarted,
    ToolResult,
    Usage,
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def dump_events(events: list[Any]) -> str:
    """Encoded events as one compact JSON text that is always valid UTF-8 (a lone surrogate a
    model sent is escaped, not dropped)."""
    text = json.dumps(events, ensure_ascii=False, separators=(",", ":"))
    if not text.isascii() and _SURROGATE.search(text):
        text = json.dumps(events, separators=(",", ":"))
    return text


def load_events(text: str) -> list[Any]:
    events = json.loads(text)
    if not isinstance(events, list):
        raise ValueError("not a batch of events")
    return events


def encode_event(event: Event) -> Any:
    match event:
        case Token(text=text):
            return text
        case Reasoning(text=text):
            return {"type": "reasoning", "text": text}
        case Started(session=session, model=model, simulated=simulated, turn=turn):
            return {
                "type": "started",
                "session": session,
                "model": model,
                "simulated": simulated,
                "turn": turn,
            }
        case ToolCallStarted(id=call_id, name=name):
            return {"type": "tool_call", "id": call_id, "name": name}
        case ToolResult(id=call_id, name=name, ok=ok, output=output):
            return {"type": "tool_result", "id": call_id, "name": name, "ok": ok, "output": output}
        case Done(finish_reason=reason, usage=usage):
            return {
                "type": "done",
                "finish_reason": reason,
                "usage": [
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.reasoning_tokens,
                    usage.estimated,
                ],
            }
        case Failed(message=message):
            return {"type": "error", "message": message}
        case _:
            assert_never(event)


def decode_event(data: Any) -> Event:
    """The event `encode_event` gave `data` for; ValueError when it is not one."""
    if isinstance(data, str):
        return Token(data)
    if not isinstance(data, dict):
        raise ValueError("not an encoded event")
    match data.get("type"):
        case "reasoning":
            return Reasoning(str(data["text"]))
        case "started":
            return Started(
                session=str(data["session"]),
                model=str(data["model"]),
                simulated=bool(data.get("simulated", False)),
                turn=str(data.get("turn", "")),
            )
        case "tool_call":
            return ToolCallStarted(id=str(data["id"]), name=str(data["name"]))
        case "tool_result":
            return ToolResult(
                id=str(data["id"]),
                name=str(data["name"]),
                ok=bool(data["ok"]),
                output=str(data["output"]),
            )
        case "done":
            prompt, completion, reasoning, estimated = data["usage"]
            return Done(
                finish_reason=str(data["finish_reason"]),
                usage=Usage(int(prompt), int(completion), reasoning, bool(estimated)),
            )
        case "error":
            return Failed(str(data["message"]))
    raise ValueError("not an encoded event")
