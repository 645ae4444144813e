"""What the Chat Completions API accepts as a history: every tool call answered, in order."""

from __future__ import annotations

from typing import Any


def assert_valid_openai_history(messages: list[dict[str, Any]]) -> None:
    """Each assistant tool_calls message is followed by exactly one tool message per call id,
    and no tool message appears without the call it answers."""
    pending: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            assert message["tool_call_id"] in pending, f"unanswerable tool message: {message}"
            pending.remove(message["tool_call_id"])
            continue
        assert not pending, f"tool calls {pending} not answered before {message['role']}"
        if message["role"] == "assistant" and message.get("tool_calls"):
            pending = {call["id"] for call in message["tool_calls"]}
    assert not pending, f"tool calls {pending} never answered"
