"""What of a conversation is sent to the model: replayable turns that fit the context window.

Storage keeps everything; this decides what the provider receives (DESIGN §8 "History"):

- failed turns and empty replies are never replayed (strict providers refuse an empty
  assistant message, and a refused prompt must not poison every later turn);
- the newest part that fits CONTEXT_TOKENS is sent, trimmed by whole turns from the oldest end,
  so a tool exchange is never split;
- tokens are counted with the model's own tokenizer where one is available (tiktoken, for
  OpenAI's models, when its encoding is installed), else with a conservative estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

from core.messages import Message

TokenCounter = Callable[[str], int]

# Chat formats add a few tokens around every message (role, separators).
MESSAGE_OVERHEAD_TOKENS = 4
# Context windows of common model families, by name prefix (longest prefix wins); CONTEXT_TOKENS
# overrides. Unknown models get 32,768 (most current models have at least that; a local server
# may be configured smaller: set CONTEXT_TOKENS to match).
CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-5": 400_000,
    "gpt-4.1": 1_047_576,
    "gpt-4o": 128_000,
    "gpt-4-turbo": 128_000,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4": 200_000,
    "claude": 200_000,
    "deepseek": 64_000,
    "llama3": 128_000,
    "llama-3": 128_000,
    "mistral": 32_000,
    "mixtral": 32_000,
    "qwen": 32_768,
    "gemma": 8_192,
}
DEFAULT_CONTEXT_TOKENS = 32_768


def context_window(model: str) -> int:
    """The context window of `model` by family; a conservative default for unknown ones."""
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in CONTEXT_WINDOWS if name.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_TOKENS


def estimate_tokens(text: str) -> int:
    """A conservative token count: one per 3 bytes of ASCII (BPE tokenizers average about 4
    characters a token on English), one per other character (CJK, emoji: one or more bytes of
    a token each)."""
    if text.isascii():
        return math.ceil(len(text) / 3)
    ascii_chars = sum(1 for ch in text if ch.isascii())
    return math.ceil(ascii_chars / 3) + (len(text) - ascii_chars)


@cache
def token_counter(model: str) -> tuple[TokenCounter, bool]:
    """(count, exact): tiktoken's encoding for `model` when tiktoken and that encoding are
    installed, else the estimate. Never downloads anything."""
    try:
        import tiktoken

        encoding = tiktoken.encoding_for_model(model)
    except Exception:  # not installed, unknown model, or the encoding file is not here
        return estimate_tokens, False

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count, True


def message_tokens(message: Message, count: TokenCounter) -> int:
    tokens = MESSAGE_OVERHEAD_TOKENS + count(message.content)
    for call in message.tool_calls:
        tokens += count(call.name) + count(call.arguments) + MESSAGE_OVERHEAD_TOKENS
    return tokens


def replayable(history: Sequence[Message]) -> list[Message]:
    """The stored history without failed turns and empty replies.

    A turn is a user message and the messages after it up to the next user message. It is
    left out whole when its last assistant message failed or is empty (no text, no tool
    calls): its user message too, so the next turn does not follow two user messages, and its
    tool exchanges with it. An interrupted reply with text is replayed as it was relayed.
    """
    kept: list[Message] = []
    for turn in split_turns(history):
        replies = [m for m in turn if m.role == "assistant"]
        last = replies[-1] if replies else None
        if last is not None and (
            last.status == "failed" or (not last.content and not last.tool_calls)
        ):
            continue
        kept.extend(turn)
    return kept


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    turns: list[list[Message]] = []
    for message in history:
        if message.role == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def fit(turns: Sequence[Sequence[Message]], budget: int, count: TokenCounter) -> list[Message]:
    """The newest whole turns whose tokens fit in `budget`, oldest first."""
    kept: list[Sequence[Message]] = []
    used = 0
    for turn in reversed(turns):
        size = sum(message_tokens(m, count) for m in turn)
        if used + size > budget:
            break
        kept.append(turn)
        used += size
    return [message for turn in reversed(kept) for message in turn]
