"""The conversations list: this browser's sessions with this server, switch, delete, drawer."""

from __future__ import annotations

import json
from typing import Any

from .conftest import AppServer
from .test_page import LAST_AI_TEXT, send, session_id, wait_done

ITEMS = "#conv-list .conv"


def titles(page: Any) -> list[str]:
    result: list[str] = page.locator(f"{ITEMS} .conv-title").all_inner_texts()
    return result


def test_list_switches_deletes_and_survives_reload(page: Any, app_server: AppServer) -> None:
    # GIVEN two conversations started with New chat in between
    app_server.script({"content": "Alpha reply."}, {"content": "Beta reply."})
    page.goto(app_server.page_url)
    send(page, "Alpha question")
    wait_done(page)
    first = session_id(page, app_server)
    page.click("#new-chat")
    send(page, "Beta question")
    wait_done(page)
    second = session_id(page, app_server)
    assert first and second and first != second

    # THEN both are listed, newest first, titled by their first prompt, with a time
    assert titles(page) == ["Beta question", "Alpha question"]
    assert page.locator(f"{ITEMS} time").first.get_attribute("datetime")
    assert page.locator("#conv-list [aria-current=true] .conv-title").inner_text() == (
        "Beta question"
    )

    # WHEN the older one is chosen, its history loads from the server
    page.locator(f"{ITEMS}", has_text="Alpha question").locator(".conv-open").click()
    page.wait_for_function(f"() => ({LAST_AI_TEXT})() === 'Alpha reply.'")
    assert page.locator("#log .msg.user").inner_text().endswith("Alpha question")
    assert session_id(page, app_server) == first

    # AND after a reload the list and the open conversation are still there
    page.reload()
    page.wait_for_function(f"() => ({LAST_AI_TEXT})() === 'Alpha reply.'")
    assert titles(page) == ["Beta question", "Alpha question"]

    # WHEN the other one is deleted
    page.get_by_role("button", name="Delete conversation: Beta question").click()
    page.wait_for_function("() => document.querySelectorAll('#conv-list .conv').length === 1")

    # THEN the server forgot it, and the open conversation is untouched
    assert app_server.session(second).status_code == 404
    assert app_server.session(first).status_code == 200
    assert page.evaluate(LAST_AI_TEXT) == "Alpha reply."

    # WHEN the open one is deleted, the page starts a new chat
    page.get_by_role("button", name="Delete conversation: Alpha question").click()
    page.locator("#conv-empty").wait_for()
    assert page.locator("#welcome").is_visible()
    assert session_id(page, app_server) is None
    assert app_server.session(first).status_code == 404


def test_conversation_the_server_no_longer_knows_disappears(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a listed conversation the server does not know (expired)
    page.goto(app_server.page_url)
    key = f"sse-chat:{app_server.url}:conversations"
    stale = [{"id": "B" * 22, "title": "Old chat", "updated": 1_700_000_000_000}]
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [key, json.dumps(stale)])
    page.reload()
    assert titles(page) == ["Old chat"]

    # WHEN it is opened
    page.locator(f"{ITEMS} .conv-open").click()

    # THEN it leaves the list, no error shows, and the page is a new chat
    page.locator("#conv-empty").wait_for()
    assert page.locator("#log .msg.error").count() == 0
    assert page.locator("#welcome").is_visible()


def test_drawer_at_300px_opens_closes_with_escape_and_switches(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a phone-sized screen and two conversations
    page.set_viewport_size({"width": 300, "height": 640})
    app_server.script({"content": "One."}, {"content": "Two."})
    page.goto(app_server.page_url)
    send(page, "First chat")
    wait_done(page)
    page.click("#new-chat")
    send(page, "Second chat")
    wait_done(page)

    # THEN the list is a closed drawer: out of sight and out of the tab order
    toggle = page.locator("#toggle-conversations")
    assert toggle.is_visible()
    assert toggle.get_attribute("aria-expanded") == "false"
    assert not page.locator("#conversations").is_visible()

    # WHEN it is opened, focus moves into it; Esc closes it and focus returns to the toggle
    toggle.click()
    page.wait_for_function("() => document.activeElement.closest('#conversations')")
    assert toggle.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.activeElement.id === 'toggle-conversations'")
    assert toggle.get_attribute("aria-expanded") == "false"
    page.wait_for_function("() => getComputedStyle(document.getElementById('conversations'))"
                           ".visibility === 'hidden'")  # fmt: skip

    # WHEN it is opened again and the first conversation chosen, the drawer closes on it
    toggle.click()
    page.locator(f"{ITEMS}", has_text="First chat").locator(".conv-open").click()
    page.wait_for_function(f"() => ({LAST_AI_TEXT})() === 'One.'")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.documentElement.scrollWidth") <= 300


def test_a_restored_conversation_missing_from_the_list_joins_it(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a conversation the list does not hold (started before the list existed)
    page.goto(app_server.page_url)
    send(page, "Kept from before")
    wait_done(page)
    page.evaluate("key => localStorage.removeItem(key)", f"sse-chat:{app_server.url}:conversations")

    # WHEN the page loads it again
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#log .msg.ai').length === 1")

    # THEN it is listed, titled by its first prompt, as the open one
    assert titles(page) == ["Kept from before"]
    assert page.locator("#conv-list [aria-current=true]").count() == 1


def test_tabbing_out_of_the_drawer_closes_it(page: Any, app_server: AppServer) -> None:
    page.set_viewport_size({"width": 300, "height": 640})
    page.goto(app_server.page_url)
    page.click("#toggle-conversations")
    page.wait_for_function("() => document.activeElement.id === 'close-conversations'")
    page.keyboard.press("Tab")  # past the drawer's last control: its own toggle comes next
    assert page.evaluate("document.activeElement.id") == "toggle-conversations"
    assert page.locator("#toggle-conversations").get_attribute("aria-expanded") == "true"
    page.keyboard.press("Tab")  # on into the page behind it
    page.wait_for_function(
        "() => document.getElementById('toggle-conversations').ariaExpanded === 'false'"
    )
    assert page.evaluate("document.activeElement.id") == "new-chat"
