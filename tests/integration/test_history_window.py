"""What of a session reaches the provider: the context window, failed turns, overflow recovery.

Against the simulator over real sockets; what the provider received is read from its request
log. Storage keeps everything (`GET /sessions/{id}`), whatever is sent.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import Received, stream_chat

SYSTEM = "You are a test assistant."  # settings_for's SYSTEM_PROMPT: 5 words


def turn(http: httpx.Client, url: str, prompt: str, session: str | None = None) -> Received:
    params = {"prompt": prompt} | ({"session": session} if session else {})
    return stream_chat(http, f"{url}/chat", params=params)


def assert_done(got: Received) -> None:
    assert got.status == 200
    assert got.events[0]["lifecycle"] == "started"
    assert got.last["lifecycle"] == "done", got.last


def assert_failed(got: Received) -> str:
    assert got.status == 200
    assert got.events[0]["lifecycle"] == "started"
    assert set(got.last) == {"error"}
    assert not any(e.get("lifecycle") == "done" for e in got.events)
    return str(got.last["error"])


def sent_messages(entry: Any) -> list[dict[str, Any]]:
    return list(entry["body"]["messages"])


def sent_texts(entry: Any) -> list[str]:
    return [m["content"] for m in sent_messages(entry)]


def stored(http: httpx.Client, url: str, session: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/sessions/{session}", params={"limit": 200})
    assert response.status_code == 200
    return list(response.json()["messages"])


def words(tag: str, n: int) -> str:
    """A prompt of exactly `n` words (the simulator counts words as tokens)."""
    return " ".join([tag] + [f"w{i}" for i in range(n - 1)])


# --- context overflow recovery -----------------------------------------------------------------


def test_a_context_length_refusal_is_retried_once_with_half_the_history(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN a session of four turns
    simulator.sim.script({"content": "ok", "times": 4})
    session = None
    for i in range(4):
        got = turn(http, app_url, words(f"t{i}", 20), session)
        assert_done(got)
        session = got.session
    # WHEN the provider refuses the fifth with a context-length message that states no window
    # (Bedrock's words), then answers
    simulator.sim.script(
        {"fault": "400", "error_message": "Input is too long for requested model."},
        {"content": "recovered answer"},
    )
    got = turn(http, app_url, words("t4", 20), session)
    # THEN the client sees one clean turn, its tokens once
    assert_done(got)
    assert got.text == "recovered answer"
    # AND the provider got the newest half of the history on the retry
    refused, retried = simulator.log[4:]
    assert refused["outcome"] == "400" and len(sent_messages(refused)) == 10
    assert sent_texts(retried) == [
        SYSTEM, words("t2", 20), "ok", words("t3", 20), "ok", words("t4", 20)
    ]  # fmt: skip
    # AND nothing was deleted from storage
    messages = stored(http, app_url, got.session)
    assert len(messages) == 10
    assert all(m["status"] == "complete" for m in messages)


def test_a_provider_stating_a_smaller_window_gets_the_history_fit_to_it_every_turn(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN a provider whose window (100) is far below the app's guess for the model (32,768):
    # its refusal says "This model's maximum context length is 100 tokens."
    url = live_app(settings_for(simulator, max_tokens=10, tools="")).url
    simulator.sim.context_tokens = 100
    simulator.sim.script({"content": "ok fine", "times": 12})
    prompts = [f"t{i} " + "a " * 19 for i in range(12)]  # 20 words, about 25 tokens each
    session = None
    # WHEN a conversation of 12 turns of 20 words each goes on (halving alone would fail
    # from the 9th turn on: half the history would still be over 100 tokens)
    for i in range(12):
        got = turn(http, url, prompts[i], session)
        # THEN every turn is answered
        assert_done(got)
        session = got.session
    # AND each refusal was followed by one request that fit, with the newest history
    outcomes = [e["outcome"] for e in simulator.log]
    assert outcomes.count("completed") == 12
    assert outcomes.count("context_length_exceeded") >= 6
    assert "context_length_exceeded, context_length_exceeded" not in ", ".join(outcomes)
    last = sent_texts(simulator.log[-1])
    assert last[-3:] == [prompts[10], "ok fine", prompts[11]]
    assert sum(len(t.split()) for t in last) <= 100
    assert len(stored(http, url, session)) == 24


def test_a_prompt_that_alone_cannot_fit_is_a_clear_error_and_never_replayed(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # GIVEN a 50-token window and a session with one short turn
    simulator.sim.context_tokens = 50
    simulator.sim.script({"content": "short reply", "times": 10})
    first = turn(http, app_url, "hello there")
    assert_done(first)
    # WHEN a 60-word prompt arrives
    huge = words("huge", 60)
    got = turn(http, app_url, huge, first.session)
    # THEN a clear error: the message is too long, even without the earlier ones
    message = assert_failed(got)
    assert "too long for the model's context window, even without earlier messages" in message
    # (with the history, then alone: two requests, both refused)
    assert [e["outcome"] for e in simulator.log[1:]] == ["context_length_exceeded"] * 2
    assert sent_texts(simulator.log[2])[-1] == huge and len(sent_texts(simulator.log[2])) == 2
    # AND the turn is stored, failed, visible in the session
    messages = stored(http, app_url, first.session)
    assert [(m["role"], m["status"]) for m in messages[2:]] == [
        ("user", "complete"), ("assistant", "failed")
    ]  # fmt: skip
    assert messages[2]["content"] == huge and messages[3]["content"] == ""
    # AND the next turns work and never send it again (nor its empty reply)
    for prompt in ("and now?", "once more"):
        assert_done(turn(http, app_url, prompt, first.session))
        sent = sent_messages(simulator.log[-1])
        assert huge not in [m["content"] for m in sent]
        assert all(m["content"] for m in sent if m["role"] == "assistant")
        assert next(m["content"] for m in sent if m["role"] == "user") == "hello there"
    assert len(simulator.log) == 5


def test_a_message_alone_over_a_window_no_refusal_states_is_a_clear_error(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    # A refusal that states no window, even once the history is gone: the message is named.
    simulator.sim.script({"content": "short reply"})
    first = turn(http, app_url, "hello there")
    simulator.sim.script(
        {"fault": "400", "error_message": "prompt is too long", "times": 2}, {"content": "ok"}
    )
    message = assert_failed(turn(http, app_url, words("huge", 60), first.session))
    assert "the message is too long for the model's context window, even without earlier" in (
        message
    )
    assert [len(sent_messages(e)) for e in simulator.log[1:]] == [4, 2]
    assert_done(turn(http, app_url, "and now?", first.session))
    assert sent_texts(simulator.log[-1])[1:] == ["hello there", "short reply", "and now?"]


def test_a_prompt_over_the_apps_own_window_goes_alone_and_the_provider_decides(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN CONTEXT_TOKENS=300 (50 kept for the reply) and a session with one turn
    url = live_app(settings_for(simulator, context_tokens=300, max_tokens=50, tools="")).url
    simulator.sim.script({"content": "short reply", "times": 3})
    first = turn(http, url, "hello there")
    # WHEN a prompt over 300 tokens by the app's estimate (400 by the provider's words) comes
    big = "word " * 400
    # THEN it is sent without history: the estimate may be above the provider's count
    assert_done(turn(http, url, big, first.session))
    assert sent_texts(simulator.log[-1]) == [SYSTEM, big]
    # AND when the provider's window is indeed smaller, its refusal is the clear error, at once
    simulator.sim.context_tokens = 300
    message = assert_failed(turn(http, url, big, first.session))
    assert "too long for the model's context window, even without earlier messages" in message
    assert [e["outcome"] for e in simulator.log] == ["completed"] * 2 + ["context_length_exceeded"]


def test_a_conversation_past_a_300_token_window_keeps_working_and_storage_keeps_everything(
    simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN CONTEXT_TOKENS=300 with 50 kept for the reply, and a provider enforcing 300 too
    # (no tools: declaring the two built-in ones costs about 200 real tokens by themselves)
    url = live_app(settings_for(simulator, context_tokens=300, max_tokens=50, tools="")).url
    simulator.sim.context_tokens = 300
    replies = [f"answer {i}: " + " ".join(["fine"] * 12) for i in range(10)]
    simulator.sim.script(*({"content": r} for r in replies))
    session = None
    # WHEN ten turns of about 25 words each are sent
    prompts = [f"question {i}: " + " ".join(["please"] * 23) for i in range(10)]
    for i, prompt in enumerate(prompts):
        got = turn(http, url, prompt, session)
        # THEN each gets its answer
        assert_done(got)
        assert got.text == replies[i]
        session = got.session
    assert session is not None
    # AND the provider never refused, and always got the newest turns, the oldest dropped out
    assert [e["outcome"] for e in simulator.log] == ["completed"] * 10
    last = sent_texts(simulator.log[-1])
    assert last[0] == SYSTEM and last[-1] == prompts[-1]
    assert prompts[0] not in last and replies[0] not in last
    assert last[-3:-1] == [prompts[-2], replies[-2]]  # but there is history
    sizes = [len(e["body"]["messages"]) for e in simulator.log]
    assert max(sizes[4:]) < 2 + 2 * 4  # bounded, although the session keeps growing
    first_dropped = next(i for i, e in enumerate(simulator.log) if prompts[0] not in sent_texts(e))
    assert 0 < first_dropped < 10
    # AND nothing was deleted from storage
    messages = stored(http, url, session)
    assert [m["content"] for m in messages] == [
        x for pair in zip(prompts, replies, strict=True) for x in pair
    ]
    assert all(m["status"] == "complete" for m in messages)


# --- failed and empty turns --------------------------------------------------------------------


def test_failed_and_empty_turns_are_never_replayed_but_interrupted_text_is(
    simulator: SimulatorServer, app_url: str, http: httpx.Client
) -> None:
    simulator.sim.script(
        {"content": "first answer"},
        {"fault": "500", "times": 3},  # turn 2: failed, nothing relayed
        {"chunks": []},  # turn 3: an empty reply
        {"chunks": ["part", "ial", " never"], "fault": "cut", "after_chunks": 2},  # turn 4
        {"content": "last answer"},
    )
    got = turn(http, app_url, "one")
    session = got.session
    assert_failed(turn(http, app_url, "two", session))
    assert_done(turn(http, app_url, "three", session))
    cut = turn(http, app_url, "four", session)
    assert cut.text == "partial"
    assert_failed(cut)
    assert_done(turn(http, app_url, "five", session))
    # The provider got turn 1, turn 4 as relayed, and the prompt: never "two", "three", ""
    assert [(m["role"], m["content"]) for m in sent_messages(simulator.log[-1])] == [
        ("system", SYSTEM),
        ("user", "one"),
        ("assistant", "first answer"),
        ("user", "four"),
        ("assistant", "partial"),
        ("user", "five"),
    ]
    # And no request ever held an empty assistant message
    for entry in simulator.log:
        assert all(m["content"] for m in sent_messages(entry) if m["role"] == "assistant")
    # Storage keeps every turn, with its status
    assert [(m["content"], m["status"]) for m in stored(http, app_url, session)] == [
        ("one", "complete"), ("first answer", "complete"),
        ("two", "complete"), ("", "failed"),
        ("three", "complete"), ("", "complete"),
        ("four", "complete"), ("partial", "interrupted"),
        ("five", "complete"), ("last answer", "complete"),
    ]  # fmt: skip
