"""The app against LLMock (PyPI `llmock` 0.2.2), an OpenAI-compatible mock server written by others.

LLMock is started on loopback by the test (its `llmock.testing.LLMockServer`, a real uvicorn
server in a thread) and driven only over HTTP: the app streams from its `/v1/chat/completions`,
faults are queued with its admin API (`POST /_llmock/scenario`), and what it received is read
from `GET /_llmock/requests`. Its own pytest fixture is not used: it would point the process's
OPENAI_* variables at the mock, and the app is configured explicitly here instead.

Every turn is checked against the contract: `started` first; `done` or `{"error"}` last, once;
the stored reply equals the relayed text. LLMock's own behaviour is kept: with tools offered it
calls one first, then answers (two requests a turn). Its faults used: a 429 with Retry-After, a
connection dropped before the first chunk and another mid-stream, a stream cut short without a
finish reason, its "prompt too long" error (400 `context_length_exceeded`), and its context
window (`context_window`: a longer prompt is refused the same way, stating the window): one
huge prompt, and a long session past the window with the app's CONTEXT_TOKENS left far above
it (the issue's case: every later turn failed). Its verdict
(`GET /_llmock/verdict`), which grades the client's retries, finds nothing on the retried faults;
it flags the two mid-stream faults as not retried, which is the relay's rule (see that test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import AppFactory, SimulatorServer, settings_for
from tests.sse_client import Received, stream_chat

llmock_testing = pytest.importorskip("llmock.testing")
llmock_ratelimit = pytest.importorskip("llmock.ratelimit")

pytestmark = pytest.mark.third_party


class Mock:
    """One LLMock server on 127.0.0.1, driven over HTTP."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url: str = server.url
        self.base_url: str = server.base_url("openai")
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def behave(self, *behaviors: dict[str, Any]) -> None:
        response = self.http.post("/_llmock/scenario", json={"behaviors": list(behaviors)})
        assert response.status_code == 201, response.text

    def requests(self) -> list[dict[str, Any]]:
        response = self.http.get("/_llmock/requests")
        assert response.status_code == 200
        return [r for r in response.json()["requests"] if r["path"].endswith("/chat/completions")]

    def verdict(self) -> dict[str, Any]:
        response = self.http.get("/_llmock/verdict")
        assert response.status_code == 200
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def llmock() -> Iterator[Mock]:
    with llmock_testing.LLMockServer() as server:
        mock = Mock(server)
        try:
            yield mock
        finally:
            mock.http.close()


@pytest.fixture
def app_on_llmock(llmock: Mock, simulator: SimulatorServer, live_app: AppFactory) -> Iterator[str]:
    # `simulator` only because live_app depends on it; the app talks to LLMock alone.
    settings = settings_for(
        simulator,
        openai_base_url=llmock.base_url,
        openai_api_key="llmock-test-key",
        openai_model="gpt-4o-mini",
    )
    yield live_app(settings).url
    assert simulator.log == []


def turn(http: httpx.Client, url: str, prompt: str, session: str | None = None) -> Received:
    params = {"prompt": prompt} | ({"session": session} if session else {})
    return stream_chat(http, f"{url}/chat", params=params)


def stored(http: httpx.Client, url: str, session: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/sessions/{session}", params={"limit": 200})
    assert response.status_code == 200
    return list(response.json()["messages"])


def check_contract(http: httpx.Client, url: str, got: Received) -> str:
    """started first; done or error last, exactly one of them; stored == relayed."""
    assert got.status == 200
    assert got.events[0]["lifecycle"] == "started"
    ends = [e for e in got.events if e.get("lifecycle") == "done" or "error" in e]
    assert ends == [got.last], got.events
    last = stored(http, url, got.session)[-1]
    assert last["role"] == "assistant"
    assert last["content"] == got.text
    return "done" if got.last.get("lifecycle") == "done" else "error"


def test_plain_turns_with_tools_and_history(
    llmock: Mock, app_on_llmock: str, http: httpx.Client
) -> None:
    # LLMock answers a request that offers tools with a tool call, then text once the result
    # comes back: the app runs the tool and relays the answer.
    first = turn(http, app_on_llmock, "What time is it now?")
    assert check_contract(http, app_on_llmock, first) == "done"
    assert first.text
    second = turn(http, app_on_llmock, "Thanks, and say hello.", first.session)
    assert check_contract(http, app_on_llmock, second) == "done"
    sent = llmock.requests()[-1]["body"]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "What time is it now?", "Thanks, and say hello."
    ]  # fmt: skip
    assert all(m["content"] or m.get("tool_calls") for m in sent if m["role"] == "assistant")


def test_rate_limit_and_drops_before_the_first_token_are_retried(
    llmock: Mock, app_on_llmock: str, http: httpx.Client
) -> None:
    # (LLMock plans one behaviour per kind for each request: the dropped request uses up one
    # of the two replies.)
    llmock.behave(
        {"type": "fail", "status": 429, "retry_after": 0.3, "times": 1},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 0, "times": 1},
        {"type": "reply", "text": "Recovered after two faults.", "times": 2},
    )
    got = turn(http, app_on_llmock, "hello")
    assert check_contract(http, app_on_llmock, got) == "done"
    assert got.text == "Recovered after two faults."
    records = llmock.requests()
    assert [r["status"] for r in records] == [429, 200, 200]
    assert records[1]["completed"] is False  # the dropped one
    assert records[1]["started_at"] - records[0]["ended_at"] >= 0.29  # Retry-After honoured
    assert llmock.verdict()["errors"] == 0, llmock.verdict()


def test_a_drop_mid_stream_and_a_truncated_stream_are_errors_with_what_was_relayed(
    llmock: Mock, app_on_llmock: str, http: httpx.Client
) -> None:
    llmock.behave(
        {"type": "reply", "text": "One two three four five six seven eight.", "times": 2},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 3, "times": 1},
        {"type": "stream_fault", "kind": "truncate", "after_chunks": 3, "times": 1},
    )
    for i in range(2):
        got = turn(http, app_on_llmock, f"count for me, {i}")
        assert check_contract(http, app_on_llmock, got) == "error"
        assert got.text  # some tokens came before the fault
        assert got.text != "One two three four five six seven eight."
        assert stored(http, app_on_llmock, got.session)[-1]["status"] == "interrupted"
    assert len(llmock.requests()) == 2  # tokens were relayed: no retry
    # LLMock's verdict flags both because neither was retried: the drop as `gave_up` (a
    # warning), the truncated stream as "accepted" (an error). The app accepted neither (an
    # error event, the reply stored `interrupted`, above) and retries only before the first
    # token: after it, a retry would relay text twice. Nothing else is flagged.
    codes = sorted(f["code"] for f in llmock.verdict()["findings"])
    assert codes == ["gave_up", "truncated_stream_accepted"], codes


def test_its_prompt_too_long_error_is_retried_with_half_the_history(
    llmock: Mock, app_on_llmock: str, http: httpx.Client
) -> None:
    session = None
    for i in range(4):
        got = turn(http, app_on_llmock, f"Message number {i}, say hello.", session)
        assert check_contract(http, app_on_llmock, got) == "done"
        session = got.session
    llmock.behave({"type": "fail", "status": 400, "code": "context_length_exceeded",
                   "message": "This model's maximum context length was exceeded.",
                   "times": 1})  # fmt: skip
    got = turn(http, app_on_llmock, "And the last one.", session)
    assert check_contract(http, app_on_llmock, got) == "done"
    # (LLMock calls one of the offered tools first, then answers: two requests a turn.)
    records = llmock.requests()
    statuses = [r["status"] for r in records]
    assert statuses.count(400) == 1
    refused = statuses.index(400)
    retried = records[refused + 1]
    assert retried["status"] == 200
    users = [m["content"] for m in retried["body"]["messages"] if m["role"] == "user"]
    assert users == ["Message number 2, say hello.", "Message number 3, say hello.",
                     "And the last one."]  # fmt: skip


def test_its_context_window_refuses_a_huge_prompt_and_the_session_goes_on(
    llmock: Mock, app_on_llmock: str, http: httpx.Client
) -> None:
    # LLMock counts 4 characters a token: a 2,000-token window.
    llmock.server.state.limiter.configure(llmock_ratelimit.LimitSettings(context_window=2000))
    first = turn(http, app_on_llmock, "Say hello.")
    assert check_contract(http, app_on_llmock, first) == "done"
    huge = "lorem ipsum " * 1000  # 12,000 characters: about 3,000 of its tokens
    got = turn(http, app_on_llmock, huge, first.session)
    assert check_contract(http, app_on_llmock, got) == "error"
    assert "too long for the model's context window" in got.last["error"]
    after = turn(http, app_on_llmock, "Say hello again.", first.session)
    assert check_contract(http, app_on_llmock, after) == "done"
    sent = llmock.requests()[-1]["body"]["messages"]
    assert huge not in [m["content"] for m in sent]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["Say hello.", "Say hello again."]


def test_a_long_session_past_its_context_window_keeps_working(
    llmock: Mock, simulator: SimulatorServer, live_app: AppFactory, http: httpx.Client
) -> None:
    # GIVEN LLMock with a 600-token window, and the app's window left at its guess for the
    # model (128,000 for gpt-4o-mini): the case, where every turn failed for good
    llmock.server.state.limiter.configure(llmock_ratelimit.LimitSettings(context_window=600))
    settings = settings_for(
        simulator,
        openai_base_url=llmock.base_url,
        openai_api_key="llmock-test-key",
        openai_model="gpt-4o-mini",
        max_tokens=50,
        tools="",
    )
    url = live_app(settings).url
    session = None
    prompts = [
        f"Turn {i}. " + "Tell me more about the weather and the sea. " * 6 for i in range(20)
    ]
    # WHEN twenty turns of about 70 of its tokens each go on (half the history alone would be
    # over the window from about the 16th on)
    for prompt in prompts:
        got = turn(http, url, prompt, session)
        # THEN each is answered
        assert check_contract(http, url, got) == "done"
        session = got.session
    assert session is not None
    records = llmock.requests()
    assert sum(r["status"] == 200 for r in records) == 20
    assert any(r["status"] == 400 for r in records)  # the window was reached
    last = [m["content"] for m in records[-1]["body"]["messages"] if m["role"] == "user"]
    assert last[-1] == prompts[-1] and prompts[0] not in last
    assert len(stored(http, url, session)) == 40  # storage keeps every turn
