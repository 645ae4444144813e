"""The page and durable turns (DESIGN §8 "Page"): a dropped connection resumes without a
duplicate or a gap, a reload mid-reply rejoins the reply, and Stop stops the server's work.

The page is served through a small TCP relay on loopback, so a test can cut every open
connection mid-reply the way a network change does, while the server keeps running.
"""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.conftest import AppServer
from tests.relay import Relay

LAST_AI_TEXT = """() => {
  const bubbles = document.querySelectorAll('#log .msg.ai');
  const last = bubbles[bubbles.length - 1];
  return last ? [...last.querySelectorAll('.md')].map((m) => m.textContent).join('') : '';
}"""
WORDS = [f"w{i} " for i in range(40)]


def relay_for(app_server: AppServer) -> Relay:
    return Relay(int(app_server.url.rsplit(":", 1)[1]))


def send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_text(page: Any, length: int) -> None:
    page.wait_for_function(f"() => ({LAST_AI_TEXT})().length >= {length}", timeout=20_000)


def wait_done(page: Any) -> None:
    page.wait_for_function(
        "() => document.querySelector('#log .msg.ai:last-of-type .meta') !== null"
        " && !document.querySelector('#prompt').disabled",
        timeout=30_000,
    )


def test_a_dropped_connection_resumes_the_reply_once_in_order(
    page: Any, app_server: AppServer
) -> None:
    relay = relay_for(app_server)
    try:
        # GIVEN a slow reply, read through a connection that will drop
        app_server.script({"chunks": WORDS, "delay_ms": 80})
        page.goto(relay.url)
        page.evaluate(
            "() => { window.sawReconnecting = false; new MutationObserver(() => {"
            " if (document.querySelector('.reconnecting')) window.sawReconnecting = true; })"
            ".observe(document.body, {subtree: true, childList: true}); }"
        )
        send(page, "Talk slowly")
        wait_text(page, len("".join(WORDS[:5])))

        # WHEN every connection drops mid-reply
        relay.cut()

        # THEN the page says it is reconnecting, then shows the whole reply exactly once
        wait_done(page)
        assert page.evaluate("window.sawReconnecting") is True
        assert page.evaluate(LAST_AI_TEXT) == "".join(WORDS)
        assert page.locator("#log .msg.ai").count() == 1
        assert page.locator("#log .msg.error").count() == 0
        # AND the server ran one upstream request for it
        assert len(app_server.model_log()) == 1
    finally:
        relay.close()


def test_a_reload_mid_reply_rejoins_it(page: Any, app_server: AppServer) -> None:
    # GIVEN a slow reply in progress
    app_server.script({"chunks": WORDS, "delay_ms": 80})
    page.goto(app_server.page_url)
    send(page, "Talk slowly")
    wait_text(page, len("".join(WORDS[:5])))

    # WHEN the page is reloaded mid-reply
    page.reload()

    # THEN the conversation comes back and the running reply is rejoined, whole, once
    page.locator("#log .msg.user").first.wait_for()
    wait_done(page)
    assert page.evaluate(LAST_AI_TEXT) == "".join(WORDS)
    assert page.locator("#log .msg.ai").count() == 1
    assert page.locator("#log .msg.user").count() == 1
    assert len(app_server.model_log()) == 1


def test_stop_stops_the_servers_work(page: Any, app_server: AppServer) -> None:
    # GIVEN a long, slow reply
    app_server.script({"chunks": [f"word{i} " for i in range(200)], "delay_ms": 60})
    page.goto(app_server.page_url)
    send(page, "Talk for a long time")
    wait_text(page, 20)

    # WHEN Stop is pressed
    page.click("#stop")

    # THEN the provider request is closed on the server within 2 s, not run to its end
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        log = app_server.model_log()
        if log and log[0]["outcome"] != "open":
            break
        time.sleep(0.05)
    log = app_server.model_log()
    assert log[0]["outcome"] == "client_closed"
    assert log[0]["chunks_sent"] < 200
