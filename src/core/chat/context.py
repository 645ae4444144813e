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
import re
from collections.abc import Callable, Sequence
from functools import cache

from core.model.messages import Message

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
# The pieces `estimate_tokens` counts: ASCII letter runs, digit runs, ASCII whitespace runs,
# one other ASCII character, runs of non-ASCII characters.
_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|[ \t\r\n]+|[\x00-\x7f]|[^\x00-\x7f]+")


def context_window(model: str) -> int:
    """The context window of `model` by family; a conservative default for unknown ones."""
    name = model.lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in CONTEXT_WINDOWS if name.startswith(prefix)]
    return CONTEXT_WINDOWS[max(matches, key=len)] if matches else DEFAULT_CONTEXT_TOKENS


def estimate_tokens(text: str) -> int:
    """A conservative token count, for models whose tokenizer is not here.

    BPE tokenizers (OpenAI's cl100k and o200k, Llama 3, Qwen, Mistral's) cut text into words,
    digit runs and symbols, then merge bytes within each piece. Counted per piece: a run of
    ASCII letters or of digits, one token per 3 characters (English words average about 4
    characters a token; digits go in groups of 3); each other ASCII symbol, one; whitespace
    other than a single space, one; other characters (CJK, Cyrillic, accents, emoji), one per
    UTF-8 byte, which no byte-level tokenizer exceeds (rare CJK characters and emoji take 2 to
    4 tokens each in cl100k). About 1.5x a real count on English prose, 2-4x on CJK; never
    under on the samples in tests/unit/test_context.py.
    """
    if not text:
        return 0
    tokens = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        first = piece[0]
        if first.isascii() and first.isalnum():
            tokens += math.ceil(len(piece) / 3)
        elif first in " \t\r\n":
            tokens += 0 if piece == " " else 1
        elif first.isascii():
            tokens += 1
        else:
            tokens += len(piece.encode("utf-8", "surrogatepass"))
    return tokens


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
