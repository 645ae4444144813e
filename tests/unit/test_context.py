"""core.chat.context: the token estimate, context windows by family, replayable history, fitting.

Real counts come from bpe-openai (a dev dependency): OpenAI's cl100k_base (GPT-4, GPT-3.5) and
o200k_base (GPT-4o, GPT-4.1, o-series) tables, shipped inside the package, so nothing is
downloaded. The estimate must never be under either on these samples.
"""

from __future__ import annotations

import pytest

from core.chat.context import (
    DEFAULT_CONTEXT_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    context_window,
    estimate_tokens,
    fit,
    message_tokens,
    replayable,
    split_turns,
    token_counter,
)
from core.model.messages import Message, Status, ToolCall
from core.model.openai import _is_context_error, _stated_window

bpe_openai = pytest.importorskip("bpe_openai")

SAMPLES = {
    "english": "The quick brown fox jumps over the lazy dog.",
    "prose": (
        "Token-aware history trims the oldest turns first, so the newest part of a "
        "conversation always reaches the provider."
    ),
    "code": 'def f(x):\n    return {"a": [1, 2, 3], "b": x ** 2}\n',
    "json": '{"type": "function", "function": {"name": "calculator", "parameters": {}}}',
    "digits": "3.14159265358979323846264338327950288419716939937510",
    "hex": "0x7fffffff deadbeefcafebabe 8f3a9c2e",
    "url": "https://example.com/a/b?c=d&e=f#g",
    "punctuation": "!!!???...;;;:::",
    "whitespace": "a    b\n\n\n\tc",
    "chinese": "你好，世界！今天天气很好，我们去公园散步吧。",
    "japanese": "吾輩は猫である。名前はまだ無い。",
    "korean": "안녕하세요, 만나서 반갑습니다.",
    "rare_cjk": "龘靐齉爩",
    "emoji": "😀👍🏽🎉",
    "accents": "Ça va très bien, merci beaucoup ! Über naïve café.",
    "cyrillic": "Привет, как дела? Всё хорошо.",
    "mixed": "In 2024, 東京 had 13,960,000 people — 😀!",
}


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_estimate_is_never_under_a_real_count(encoding: str, name: str) -> None:
    text = SAMPLES[name]
    real = len(bpe_openai.get_encoding(encoding).encode(text))
    assert estimate_tokens(text) >= real


def test_the_estimate_is_not_wildly_over_on_english() -> None:
    # Conservative, but an English conversation keeps most of its history: under 2x cl100k.
    text = " ".join(SAMPLES[k] for k in ("english", "prose")) * 20
    real = len(bpe_openai.get_encoding("cl100k_base").encode(text))
    assert real <= estimate_tokens(text) < 2 * real


def test_the_estimate_of_nothing_is_nothing_and_grows_with_text() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("word " * 100) > estimate_tokens("word " * 10)


def test_the_counter_falls_back_to_the_estimate_without_tiktokens_encoding() -> None:
    count, exact = token_counter("surely-not-a-model-tiktoken-knows")
    assert (count, exact) == (estimate_tokens, False)


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o-mini", 128_000),
        ("gpt-4.1-mini", 1_047_576),  # the longest prefix wins over "gpt-4"
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo-0125", 16_385),
        ("GPT-5", 400_000),
        ("o3-mini", 200_000),
        ("openai/gpt-4o", 128_000),  # a router's provider prefix is ignored
        ("claude-sonnet-4", 200_000),
        ("deepseek-chat", 64_000),
        ("llama3.1:8b", 128_000),
        ("mistral-small-latest", 32_000),
        ("qwen2.5-7b-instruct", 32_768),
        ("some-local-model", DEFAULT_CONTEXT_TOKENS),
    ],
)
def test_context_window_by_family(model: str, window: int) -> None:
    assert context_window(model) == window


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str, status: Status = "complete", *calls: ToolCall) -> Message:
    return Message(role="assistant", content=text, status=status, tool_calls=calls)


def tool(call: ToolCall, output: str) -> Message:
    return Message(role="tool", content=output, tool_call_id=call.id, name=call.name)


CALL = ToolCall(id="c1", name="calculator", arguments='{"expression": "6*7"}')


def test_replayable_drops_failed_and_empty_turns_whole() -> None:
    history = [
        user("one"), assistant("first answer"),
        user("two"), assistant("", "failed"),  # failed: left out, user message too
        user("three"), assistant(""),  # empty reply: left out
        user("four"), assistant("half an ans", "interrupted"),  # text: replayed as relayed
        user("five"), assistant("", "interrupted"),  # interrupted before any text: left out
        user("six"), assistant("", "complete", CALL), tool(CALL, "42"), assistant("42"),
    ]  # fmt: skip
    kept = replayable(history)
    assert [m.content for m in kept if m.role == "user"] == ["one", "four", "six"]
    assert all(m.content or m.tool_calls for m in kept if m.role == "assistant")
    assert kept[-4:] == history[-4:]  # the tool exchange is whole


def test_replayable_drops_a_turn_whose_tool_exchange_ended_in_failure() -> None:
    history = [
        user("go"),
        assistant("", "complete", CALL),
        tool(CALL, "42"),
        assistant("", "failed"),
    ]
    assert replayable(history) == []


def test_split_turns_starts_a_turn_at_each_user_message() -> None:
    history = [
        user("a"),
        assistant("b"),
        user("c"),
        assistant("", "complete", CALL),
        tool(CALL, "1"),
    ]
    assert [len(t) for t in split_turns(history)] == [2, 3]


def turn_size(turn: list[Message]) -> int:
    return sum(message_tokens(m, estimate_tokens) for m in turn)


def test_fit_keeps_the_newest_whole_turns_and_never_splits_a_tool_exchange() -> None:
    turns = [
        [user("old " * 30), assistant("answer " * 30)],
        [user("use the tool"), assistant("", "complete", CALL), tool(CALL, "42" * 20),
         assistant("it is 42")],
        [user("newest"), assistant("ok")],
    ]  # fmt: skip
    sizes = [turn_size(t) for t in turns]
    # Room for the newest turn and all but one message of the tool turn: only the newest fits.
    assert fit(turns, sizes[2] + sizes[1] - 1, estimate_tokens) == turns[2]
    # Room for both: the tool turn comes whole, oldest first.
    assert fit(turns, sizes[2] + sizes[1], estimate_tokens) == turns[1] + turns[2]
    assert fit(turns, sum(sizes), estimate_tokens) == [m for t in turns for m in t]
    assert fit(turns, sizes[2] - 1, estimate_tokens) == []


def test_fit_stops_at_the_first_turn_that_does_not_fit() -> None:
    # An old small turn behind a big one is not sent: the history stays contiguous.
    turns = [[user("tiny")], [user("big " * 200)], [user("new")]]
    budget = turn_size(turns[0]) + turn_size(turns[2])
    assert fit(turns, budget, estimate_tokens) == turns[2]


def test_message_tokens_count_the_overhead_and_tool_calls() -> None:
    plain = message_tokens(user("hi"), estimate_tokens)
    assert plain == MESSAGE_OVERHEAD_TOKENS + estimate_tokens("hi")
    calling = message_tokens(assistant("", "complete", CALL), estimate_tokens)
    assert calling == (
        2 * MESSAGE_OVERHEAD_TOKENS
        + estimate_tokens("calculator")
        + estimate_tokens(CALL.arguments)
    )


@pytest.mark.parametrize(
    ("error", "window"),
    [
        # OpenAI, vLLM, Groq, Together
        ({"message": "This model's maximum context length is 8192 tokens. However, your "
                     "messages resulted in 9000 tokens.", "code": "context_length_exceeded"}, 8192),
        ({"message": "This model's maximum context length is 128,000 tokens."}, 128_000),
        ({"message": "prompt is too long: 204312 tokens > 200000 maximum"}, 200_000),  # Anthropic
        ({"message": "The input token count (40000) exceeds the maximum number of tokens "
                     "allowed (32768)."}, 32_768),  # Gemini
        ({"message": "the request exceeds the available context size", "n_ctx": 4096}, 4096),
        ({"message": "This model's maximum context length was exceeded."}, None),
        ({"message": "Input is too long for requested model."}, None),
        ({"message": "maximum context length is 0 tokens"}, None),
    ],
)  # fmt: skip
def test_the_window_a_context_refusal_states(error: dict[str, object], window: int | None) -> None:
    payload = {"error": error}
    assert _is_context_error(payload)
    assert _stated_window(payload) == window


def test_other_refusals_are_not_context_errors() -> None:
    assert not _is_context_error({"error": {"message": "Invalid model", "code": "model_not_found"}})
    assert not _is_context_error({"error": {"message": "Rate limit reached on tokens per min"}})
