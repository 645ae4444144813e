"""The page against a server that requires an access key (ACCESS_KEY): it asks once, remembers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import ROOT, AppServer, PageProbe, _open_page, serve_app
from .test_page import LAST_AI_TEXT, send, wait_done

ACCESS_KEY = "page-test-key-0123456789"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with serve_app(tmp_path_factory.mktemp("e2e-locked"), ACCESS_KEY=ACCESS_KEY) as server:
        yield server


@pytest.fixture
def locked_page(
    browser: Any, locked_server: AppServer, probe: PageProbe, request: pytest.FixtureRequest
) -> Iterator[Any]:
    locked_server.reset()
    yield from _open_page(browser, probe, request)


def test_page_asks_for_the_access_key_once_and_remembers_it(
    locked_page: Any, locked_server: AppServer
) -> None:
    page = locked_page
    page.goto(locked_server.page_url)

    # WHEN the first message is refused with 401
    send(page, "Let me in")

    # THEN a small form asks for the key (no window.prompt), and the input stays usable
    page.locator("#key-form").wait_for()
    assert page.evaluate("document.activeElement.id") == "key-input"
    assert page.locator("#log .msg.error").count() == 0

    # WHEN a wrong key is given, the form says so and asks again
    page.fill("#key-input", "wrong-key")
    page.press("#key-input", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#key-form label').textContent.includes('not accepted')"
    )

    # WHEN the right key is given, the same prompt is sent and streams
    page.fill("#key-input", ACCESS_KEY)
    page.press("#key-input", "Enter")
    wait_done(page)
    assert "Let me in" in (page.evaluate(LAST_AI_TEXT) or "")
    assert page.locator("#key-form").is_hidden()
    assert page.locator("#log .msg.user").count() == 1

    # AND after a reload the history loads with the remembered key, without asking again
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#log .msg.ai').length === 1")
    assert page.locator("#key-form").is_hidden()
    send(page, "Still me")
    wait_done(page, 1)
    assert page.locator("#key-form").is_hidden()

    # AND the conversations list works with the key: switching loads with it, delete sends it
    sid = page.evaluate("key => localStorage.getItem(key)", f"sse-chat:{locked_server.url}:session")
    page.click("#new-chat")
    page.locator("#conv-list .conv-open", has_text="Let me in").click()
    page.wait_for_function("() => document.querySelectorAll('#log .msg.ai').length === 2")
    page.get_by_role("button", name="Delete conversation: Let me in").click()
    page.locator("#conv-empty").wait_for()
    assert page.locator("#key-form").is_hidden()
    headers = {"Authorization": f"Bearer {ACCESS_KEY}"}
    assert (
        locked_server.http.get(f"{locked_server.url}/sessions/{sid}", headers=headers).status_code
        == 404
    )


def test_every_page_file_is_served_without_the_key(locked_server: AppServer) -> None:
    # The page must load before it can ask for the key: no file of it may fall under a guarded
    # path (the guard matches /chat and /sessions as prefixes: a chat.js would be refused).
    static = ROOT / "src" / "handlers" / "static"
    for file in sorted(p for p in static.rglob("*") if p.is_file()):
        path = "/" + file.relative_to(static).as_posix()
        response = locked_server.http.get(locked_server.url + path)
        assert response.status_code == 200, f"GET {path} -> {response.status_code}"
