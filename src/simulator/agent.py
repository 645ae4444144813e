"""The default answer when nothing is scripted: the core's simulated model's choice, over HTTP.

The request's OpenAI messages are read into the core's `Message`s and `core.model.simulated.decide`
picks the reply, so the HTTP simulator and the app's in-process simulated model agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast, get_args

from core.model.messages import Message, Role, ToolCall
from core.model.simulated import decide, hello
from simulator.replies import Reply

_ROLES = frozenset(get_args(Role))


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def request_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if isinstance(m, dict)]


def declared_tools(body: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            name = tool["function"].get("name")
            if isinstance(name, str):
                names.add(name)
    return names


def _message(raw: Mapping[str, Any]) -> Message | None:
    role = raw.get("role")
    if role not in _ROLES:
        return None
    calls = tuple(
        ToolCall(
            id=str(call.get("id")),
            name=str(call["function"].get("name", "tool")),
            arguments=str(call["function"].get("arguments", "")),
        )
        for call in raw.get("tool_calls") or []
        if isinstance(call, dict) and isinstance(call.get("function"), dict)
    )
    tool_call_id = raw.get("tool_call_id")
    name = raw.get("name")
    return Message(
        role=cast(Role, role),
        content=text_of(raw.get("content")),
        tool_calls=calls,
        tool_call_id=None if tool_call_id is None else str(tool_call_id),
        name=name if isinstance(name, str) else None,
    )


def default_reply(body: Mapping[str, Any]) -> Reply:
    """What the simulator answers when nothing is scripted: deterministic and demo-friendly."""
    messages = [m for m in map(_message, request_messages(body)) if m is not None]
    decision = decide(messages, declared_tools(body))
    reply: Reply = {"reasoning": decision.reasoning} if decision.reasoning else {}
    if decision.tool_calls:
        reply["tool_calls"] = [
            {"name": call.name, "arguments": call.arguments} for call in decision.tool_calls
        ]
        return reply
    reply["content"] = decision.text
    return reply


def last_user_text(body: Mapping[str, Any]) -> str:
    return next(
        (
            text_of(m.get("content"))
            for m in reversed(request_messages(body))
            if m.get("role") == "user"
        ),
        "",
    )


def default_text(body: Mapping[str, Any]) -> str:
    """The text a stream fault streams before it fires, when the reply scripts none."""
    return hello(last_user_text(body))


def word_count(body: Mapping[str, Any]) -> int:
    return sum(len(text_of(m.get("content")).split()) for m in request_messages(body))
