"""The chat page in a real browser (system Chromium) against the real app and the simulator."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, AppServer, PageProbe

LAST_AI_TEXT = """() => {
  const bubbles = document.querySelectorAll('#log .msg.ai');
  const last = bubbles[bubbles.length - 1];
  return last ? [...last.querySelectorAll('.md')].map((m) => m.textContent).join('') : null;
}"""

WORDS = " ".join(f"word{i}" for i in range(1, 31))


def send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def wait_done(page: Any, count: int = 1) -> None:
    """Wait until `count` assistant bubbles carry their finished meta line (tokens, seconds)."""
    page.wait_for_function(
        "n => document.querySelectorAll('#log .msg.ai .meta').length >= n", arg=count
    )
    page.wait_for_function("() => !document.querySelector('#prompt').disabled")


def session_id(page: Any, server: AppServer) -> str | None:
    value = page.evaluate("key => localStorage.getItem(key)", f"sse-chat:{server.url}:session")
    return value if isinstance(value, str) else None


def test_reply_streams_in_progressively(page: Any, app_server: AppServer) -> None:
    # GIVEN a reply paced at 80 ms per word
    app_server.script({"content": WORDS, "delay_ms": 80})
    page.goto(app_server.page_url)
    assert page.evaluate("document.activeElement.id") == "prompt"

    # WHEN the user sends a message with Enter
    send(page, "Count for me")

    # THEN the user bubble shows, the input is locked, and the AI text grows step by step
    assert page.locator("#log .msg.user").inner_text().endswith("Count for me")
    assert page.locator("#prompt").is_disabled()
    assert page.locator("#stop").is_visible()
    lengths: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        text = page.evaluate(LAST_AI_TEXT) or ""
        if not lengths or lengths[-1] != len(text):
            lengths.append(len(text))
        if text == WORDS:
            break
        time.sleep(0.02)
    growing = [n for n in lengths if 0 < n < len(WORDS)]
    assert len(set(growing)) >= 3, f"text did not grow progressively: {lengths}"
    assert lengths == sorted(lengths), "the reply text should only ever grow"

    # AND on done the stream is closed, the input is back and focused, and the model is labelled
    wait_done(page)
    assert page.evaluate(LAST_AI_TEXT) == WORDS
    assert page.locator("#prompt").is_enabled()
    assert page.evaluate("document.activeElement.id") == "prompt"
    assert page.locator("#model").inner_text() == "gpt-4.1-mini"
    assert "sim" not in (page.locator("#model").get_attribute("class") or "").split()
    user_box = page.locator("#log .msg.user").bounding_box()
    ai_box = page.locator("#log .msg.ai").bounding_box()
    assert user_box["x"] > ai_box["x"], "user bubbles sit right, AI bubbles left"


def test_tool_call_shows_a_chip_with_its_name_then_its_result(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN the model calls the calculator (arguments streamed slowly), then summarises
    app_server.script(
        {
            "tool_calls": [{"name": "calculator", "arguments": '{"expression": "6*7"}'}],
            "delay_ms": 120,
        }
    )
    page.goto(app_server.page_url)
    page.evaluate(
        """() => {
          window.chipStates = [];
          new MutationObserver(() => {
            const chip = document.querySelector('#log .chip');
            if (!chip) return;
            const state = chip.dataset.state + '|' + chip.textContent;
            if (window.chipStates[window.chipStates.length - 1] !== state) {
              window.chipStates.push(state);
            }
          }).observe(document.getElementById('log'),
                     {subtree: true, childList: true, attributes: true, characterData: true});
        }"""
    )

    # WHEN the user asks
    send(page, "What is 6*7?")
    wait_done(page)

    # THEN a chip showed the tool's name while it ran, then its result; the reply uses it
    states: list[str] = page.evaluate("window.chipStates")
    assert states[0].startswith("running|") and "calculator" in states[0], states
    assert states[-1].startswith("ok|") and states[-1].endswith("→ 6*7 = 42"), states
    chip = page.locator("#log .chip")
    assert chip.count() == 1
    assert "calculator" in chip.inner_text()
    assert "42" in (page.evaluate(LAST_AI_TEXT) or "")


def test_error_event_shows_an_alert_bubble_and_retry_recovers(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN the provider rejects the first request (an `{"error"}` event after `started`)
    app_server.script({"fault": "401"})
    page.goto(app_server.page_url)

    # WHEN the user sends a message
    send(page, "Hello there")

    # THEN a red alert bubble invites a retry and the input is usable again
    alert = page.locator("#log .msg.error[role=alert]")
    alert.wait_for()
    assert "api key" in alert.inner_text().lower()
    assert page.locator("#prompt").is_enabled()
    assert page.locator("#log .msg.user").count() == 1
    color = page.evaluate(
        "getComputedStyle(document.querySelector('#log .msg.error')).backgroundColor"
    )
    red, green, blue = (int(c) for c in color[color.index("(") + 1 : -1].split(",")[:3])
    assert red > green and red > blue, f"error bubble should be red-tinted, got {color}"

    # WHEN the user presses Retry (the simulator answers normally now)
    alert.get_by_role("button", name="Retry").click()

    # THEN the error is replaced by a streamed reply, without repeating the user bubble
    wait_done(page)
    assert page.locator("#log .msg.error").count() == 0
    assert "Hello there" in (page.evaluate(LAST_AI_TEXT) or "")
    assert page.locator("#log .msg.user").count() == 1


def test_refused_request_shows_the_servers_message(page: Any, app_server: AppServer) -> None:
    # GIVEN a prompt over MAX_PROMPT_CHARS (16,000 by default), refused with 413 before streaming
    page.goto(app_server.page_url)

    # WHEN it is sent
    send(page, "x" * 16_001)

    # THEN the server's JSON message is shown (EventSource cannot read it; the page asks again)
    alert = page.locator("#log .msg.error[role=alert]")
    alert.wait_for()
    assert "16000" in alert.inner_text().replace(",", "") or "long" in alert.inner_text()
    assert page.locator("#prompt").is_enabled()


def test_stop_closes_the_stream_and_keeps_the_partial_reply(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a slow reply
    app_server.script({"content": WORDS + " " + WORDS, "delay_ms": 150})
    stops: list[str] = []
    page.on(
        "request",
        lambda r: stops.append(r.url) if r.method == "POST" and r.url.endswith("/stop") else None,
    )
    page.goto(app_server.page_url)
    send(page, "Talk slowly")
    page.wait_for_function(f"() => ({LAST_AI_TEXT})()?.length > 10")

    # WHEN the user presses Stop
    page.click("#stop")

    # THEN no more text arrives, the bubble is marked stopped and the input is back
    stopped_at = page.evaluate(LAST_AI_TEXT)
    time.sleep(0.8)
    assert page.evaluate(LAST_AI_TEXT) == stopped_at
    assert len(stopped_at) < len(WORDS) * 2
    assert page.locator("#log .msg.ai .meta.stopped").is_visible()
    assert page.locator("#prompt").is_enabled()
    assert page.locator("#stop").is_hidden()
    assert page.evaluate("document.activeElement.id") == "prompt"

    # AND the page asked the server to stop the turn, which recorded the interrupted reply
    sid = session_id(page, app_server)
    assert sid
    assert stops == [f"{app_server.url}/sessions/{sid}/stop"]
    deadline = time.monotonic() + 10
    while True:
        messages = app_server.session(sid).json()["messages"]
        if messages[-1]["role"] == "assistant" and messages[-1]["status"] == "interrupted":
            break
        assert time.monotonic() < deadline, f"no interrupted reply stored: {messages}"
        time.sleep(0.1)
    assert stopped_at.startswith(messages[-1]["content"][: len(stopped_at) // 2])


def test_escape_stops_a_reply(page: Any, app_server: AppServer) -> None:
    app_server.script({"content": WORDS, "delay_ms": 150})
    page.goto(app_server.page_url)
    send(page, "Talk slowly")
    page.wait_for_function(f"() => ({LAST_AI_TEXT})()?.length > 5")
    page.keyboard.press("Escape")
    page.locator("#log .msg.ai .meta.stopped").wait_for()
    assert page.locator("#prompt").is_enabled()


def test_reload_restores_the_conversation(page: Any, app_server: AppServer) -> None:
    # GIVEN a conversation of two turns, one with a tool call
    page.goto(app_server.page_url)
    send(page, "Hello, remember me")
    wait_done(page, 1)
    send(page, "What is 12*12?")
    wait_done(page, 2)
    before = page.evaluate(
        "() => [...document.querySelectorAll('#log .msg.user, #log .msg.ai .md')]"
        ".map((n) => n.textContent)"
    )
    sid = session_id(page, app_server)
    assert sid

    # WHEN the page is reloaded
    page.reload()

    # THEN the conversation comes back from GET /sessions/{id}, chips and all
    page.wait_for_function("() => document.querySelectorAll('#log .msg.ai').length === 2")
    after = page.evaluate(
        "() => [...document.querySelectorAll('#log .msg.user, #log .msg.ai .md')]"
        ".map((n) => n.textContent)"
    )
    assert after == before
    assert "144" in page.locator("#log .chip").inner_text()
    assert page.locator("#welcome").is_hidden()

    # AND the next message continues the same session
    send(page, "And again")
    wait_done(page, 1)  # restored bubbles carry no timing line; this is the first live one
    assert session_id(page, app_server) == sid
    assert len(app_server.session(sid).json()["messages"]) >= 6


def test_expired_session_silently_starts_a_new_chat(
    page: Any, app_server: AppServer, probe: PageProbe
) -> None:
    # GIVEN a remembered session the server does not know (well-formed, 22 URL-safe chars)
    page.goto(app_server.page_url)
    key = f"sse-chat:{app_server.url}:session"
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [key, "A" * 22])

    # WHEN the page loads
    page.reload()
    page.wait_for_function(f"() => localStorage.getItem({json.dumps(key)}) === null")

    # THEN no error is shown and a message starts a fresh session
    assert page.locator("#log .msg").count() == 0
    assert page.locator("#welcome").is_visible()
    send(page, "Fresh start")
    wait_done(page)
    assert session_id(page, app_server) not in (None, "A" * 22)


def test_new_chat_forgets_the_session(page: Any, app_server: AppServer) -> None:
    page.goto(app_server.page_url)
    send(page, "First conversation")
    wait_done(page)
    first = session_id(page, app_server)
    page.click("#new-chat")
    assert page.locator("#log .msg").count() == 0
    assert page.locator("#welcome").is_visible()
    assert session_id(page, app_server) is None
    send(page, "Second conversation")
    wait_done(page)
    assert session_id(page, app_server) not in (None, first)


def test_model_output_is_text_never_html(page: Any, app_server: AppServer) -> None:
    # GIVEN a reply mixing markup and the markdown subset
    hostile = (
        'Look: <img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>\n\n'
        "**bold** and `code`, **6*7 = 42**, 2 ** 3 ** 2\n\n- one\n- two\n\n"
        "```\n<b>not bold</b>\n```"
    )
    app_server.script({"content": hostile})
    page.goto(app_server.page_url)
    send(page, "Be nasty")
    wait_done(page)

    # THEN markup shows as literal text and only the safe subset becomes elements
    log = page.locator("#log")
    assert log.locator("img, script, b").count() == 0
    assert page.evaluate("window.pwned") is None
    text = page.evaluate(LAST_AI_TEXT) or ""
    assert '<img src=x onerror="window.pwned=1">' in text
    assert "<b>not bold</b>" in text
    assert log.locator(".msg.ai strong").all_inner_texts() == ["bold", "6*7 = 42"]
    assert "2 ** 3 ** 2" in text
    assert log.locator(".msg.ai p code").inner_text() == "code"
    assert log.locator(".msg.ai li").count() == 2
    assert log.locator(".msg.ai pre code").inner_text() == "<b>not bold</b>"


def test_works_under_a_strict_content_security_policy(page: Any, app_server: AppServer) -> None:
    # GIVEN the page served with script-src 'self' and no inline styles or scripts allowed
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    def with_csp(route: Any) -> None:
        response = route.fetch()
        route.fulfill(
            response=response, headers={**response.headers, "content-security-policy": policy}
        )

    page.route(app_server.page_url, with_csp)
    page.goto(app_server.page_url)
    page.evaluate(
        "() => { window.violations = [];"
        " document.addEventListener('securitypolicyviolation',"
        " (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI)); }"
    )

    # WHEN a turn runs
    send(page, "Hello under CSP")
    wait_done(page)

    # THEN it worked and nothing was blocked
    assert "Hello under CSP" in (page.evaluate(LAST_AI_TEXT) or "")
    assert page.evaluate("window.violations") == []


def test_page_served_from_another_origin_works_with_api_parameter(
    browser: Any, app_server: AppServer, static_origin: str, probe: PageProbe
) -> None:
    # GIVEN the static files served by another host (python -m http.server), pointed at the
    # server with ?api= (which allows that origin with CORS_ALLOW_ORIGINS)
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: probe.errors.append(str(exc)))
        page.goto(f"{static_origin}/index.html?api={app_server.url}")

        # WHEN the user chats
        send(page, "Hello from elsewhere")
        page.wait_for_function("() => document.querySelector('#log .msg.ai .meta')")

        # THEN the reply streamed from the server named in ?api=
        assert "Hello from elsewhere" in (page.evaluate(LAST_AI_TEXT) or "")
        assert page.locator("#file-note").is_hidden()
        assert not probe.errors
    finally:
        context.close()


def test_page_opened_from_disk_says_how_to_serve_it(browser: Any, probe: PageProbe) -> None:
    # GIVEN index.html opened from disk: browsers refuse ES modules from file://
    index = ROOT / "src" / "handlers" / "static" / "index.html"
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{index.as_uri()}?api=http://127.0.0.1:9")

        # THEN a clear note says to serve the folder, and the composer is disabled
        note = page.locator("#file-note[role=alert]")
        note.wait_for()
        assert "http.server" in note.inner_text()
        assert page.locator("#prompt").is_disabled()
    finally:
        context.close()


def test_300px_wide_has_no_horizontal_scroll(page: Any, app_server: AppServer) -> None:
    # GIVEN a narrow phone-sized viewport and content that tends to overflow
    page.set_viewport_size({"width": 300, "height": 640})
    long_word = "Supercalifragilistic" * 6
    app_server.script({"content": f"{long_word}\n\n```\n{'x = 1; ' * 30}\n```\n\n- `{'y' * 80}`"})
    page.goto(app_server.page_url)
    assert page.evaluate("document.documentElement.scrollWidth") <= 300

    # WHEN a conversation with long words, a code block and a tool chip is on screen
    send(page, "Overflow " + "z" * 120)
    wait_done(page)
    send(page, "What is 2**10?")
    wait_done(page, 2)

    # THEN nothing scrolls sideways and the composer is fully visible
    assert page.evaluate("document.documentElement.scrollWidth") <= 300
    assert page.evaluate("document.body.scrollWidth") <= 300
    send_box = page.locator("#send").bounding_box()
    assert send_box["x"] + send_box["width"] <= 300


def _serious_violations(page: Any, axe: Path) -> list[str]:
    page.add_script_tag(path=str(axe))
    results = page.evaluate("async () => await axe.run(document)")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_accessibility_problems(
    axe_page: Any, app_server: AppServer, axe_script: Path
) -> None:
    page = axe_page
    # GIVEN the empty page
    page.goto(app_server.page_url)
    assert _serious_violations(page, axe_script) == []

    # WHEN it holds every kind of bubble: user, AI with markdown and a chip, error, stopped
    app_server.script({"content": "Some **bold**, `code` and\n\n```\nprint(1)\n```"})
    send(page, "Show me markdown")
    wait_done(page, 1)
    send(page, "What is 3*3?")
    wait_done(page, 2)
    app_server.script({"fault": "401"})
    send(page, "Fail now")
    page.locator("#log .msg.error").wait_for()

    # THEN axe-core still reports no serious or critical violations
    assert _serious_violations(page, axe_script) == []


def test_page_is_usable_by_keyboard_alone(page: Any, app_server: AppServer) -> None:
    page.goto(app_server.page_url)
    # From the header, Tab reaches the (scrollable) log, then a suggestion; Enter sends it.
    page.focus("#new-chat")
    page.keyboard.press("Tab")  # the conversation log (scrollable, focusable)
    assert page.evaluate("document.activeElement.id") == "log"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "suggestion"
    page.keyboard.press("Enter")
    wait_done(page)
    assert page.evaluate("document.activeElement.id") == "prompt"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert ring != "none", "focused controls show a focus ring"


SCREENSHOT_REPLY = (
    "Server-Sent Events push a stream of text events over **one long-lived HTTP "
    "response**; the browser's `EventSource` (or `fetch`) reads them as they arrive.\n\n"
    "| | SSE | WebSocket |\n|:--|:--|:--|\n"
    "| direction | server → client | both ways |\n"
    "| protocol | plain HTTP | its own |\n"
    "| reconnect | built in (`Last-Event-ID`) | by hand |\n\n"
    "```python\nasync def events():\n    async for token in model.stream(prompt):\n"
    '        yield {"data": json.dumps({"token": token})}\n```'
)


@pytest.mark.skipif(
    not os.environ.get("UPDATE_SCREENSHOT"), reason="set UPDATE_SCREENSHOT=1 to refresh docs/"
)
def test_update_readme_screenshot(page: Any, app_server: AppServer) -> None:
    """Writes docs/screenshot.png (desktop) and docs/screenshot-mobile.png (360 px wide)."""
    page.set_viewport_size({"width": 1100, "height": 860})
    page.goto(app_server.page_url)
    app_server.script({"content": "Recursion is a function calling itself on a smaller input."})
    send(page, "Explain recursion in one line")
    wait_done(page, 1)
    page.click("#new-chat")
    send(page, "What is 1234 * 5678? Use the calculator.")
    wait_done(page, 1)
    app_server.script({"content": SCREENSHOT_REPLY, "delay_ms": 15})
    send(page, "Compare SSE and WebSockets, with a code sample.")
    wait_done(page, 2)
    page.locator("#prompt").blur()
    page.mouse.move(0, 0)
    (ROOT / "docs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
    page.set_viewport_size({"width": 360, "height": 740})
    page.evaluate("document.getElementById('log').scrollTop = 1e6")
    page.wait_for_timeout(200)
    page.screenshot(path=str(ROOT / "docs" / "screenshot-mobile.png"))


def test_the_app_serves_the_page_and_its_assets(app_server: AppServer) -> None:
    # The page references its files relatively (so any static host can serve it): served at /,
    # the app must answer these names next to it.
    expected = {
        "/": "text/html",
        "/app.css": "text/css",
        "/favicon.svg": "image/svg+xml",
        "/vendor/highlight.js/a11y-dark.min.css": "text/css",
        "/boot.js": "javascript",
    }
    # ES modules load only with a JavaScript MIME type: every module of the page, vendored too.
    static = ROOT / "src" / "handlers" / "static"
    for module in sorted(m for m in static.rglob("*.js") if m.is_file()):
        expected["/" + module.relative_to(static).as_posix()] = "javascript"
    assert "/main.js" in expected and "/vendor/marked/marked.esm.js" in expected
    for path, content_type in expected.items():
        response = app_server.http.get(app_server.url + path)
        assert response.status_code == 200, f"GET {path} -> {response.status_code}"
        assert content_type in response.headers["content-type"], (path, response.headers)
    assert '<script type="module" src="main.js">' in app_server.http.get(app_server.url + "/").text


def test_role_parameter_is_passed_through(page: Any, app_server: AppServer) -> None:
    page.goto(app_server.page_url + "?role=concise")
    send(page, "Be brief")
    wait_done(page)
    system = app_server.model_log()[-1]["body"]["messages"][0]
    assert system["role"] == "system" and "as few words" in system["content"]


def test_a_passing_failure_becomes_the_reply_not_a_lost_turn(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN the first connection to /chat fails (a network blip), later ones go through
    app_server.script({"content": "Recovered reply.", "delay_ms": 20})
    failed: list[str] = []

    def first_fails(route: Any) -> None:
        if not failed:
            failed.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/chat?*", first_fails)
    page.goto(app_server.page_url)

    # WHEN the user sends a prompt
    send(page, "Hello once")

    # THEN the page's follow-up request is shown as the reply, with no error bubble
    wait_done(page)
    assert failed
    assert "Recovered reply." in (page.evaluate(LAST_AI_TEXT) or "")
    assert page.locator("#log .msg.error").count() == 0
    # AND the server holds exactly one complete turn: nothing was cut off and stored half
    messages = app_server.session(session_id(page, app_server)).json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]


def test_simulator_badge_follows_the_servers_simulated_flag(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a server that says it is simulated, on /healthz and on `started`, whatever the
    # model is called
    def healthz(route: Any) -> None:
        route.fulfill(json={"status": "ok", "model": "gpt-4.1-mini", "simulated": True})

    events = [
        {
            "lifecycle": "started",
            "session": "S" * 22,
            "turn": "t1",
            "model": "gpt-4.1-mini",
            "simulated": True,
        },
        {"token": "Simulated hello."},
        {
            "lifecycle": "done",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        },
    ]
    body = "".join(f"id: e{i}\ndata: {json.dumps(e)}\n\n" for i, e in enumerate(events))

    def chat(route: Any) -> None:
        route.fulfill(body=body, content_type="text/event-stream")

    page.route("**/healthz", healthz)
    page.route("**/chat?*", chat)
    page.goto(app_server.page_url)

    # THEN the badge says "simulator" before any message, and still after a turn
    badge = page.locator("#model")
    page.wait_for_function("() => !document.querySelector('#model').hidden")
    assert badge.inner_text() == "simulator"
    assert "sim" in (badge.get_attribute("class") or "").split()
    send(page, "Hi")
    wait_done(page)
    assert page.evaluate(LAST_AI_TEXT) == "Simulated hello."
    assert badge.inner_text() == "simulator"
    assert "gpt-4.1-mini" in (badge.get_attribute("title") or "")


def test_stream_reader_accepts_every_legal_spelling_of_events(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a stream with CRLF line ends, comments, "data:" without a space, an event the page
    # does not know, a JSON object split over two data lines, and a non-JSON event
    started = {"lifecycle": "started", "session": "C" * 22, "turn": "t", "model": "m"}
    body = (
        "retry: 1000\r\n\r\n"
        f"id: a\r\ndata: {json.dumps(started)}\r\n\r\n"
        ": ping\r\n\r\n"
        'data:{"token": "Hello"}\r\n\r\n'
        'data: {"unknown": 1}\r\n\r\n'
        "data: not json\r\n\r\n"
        'data: {"token":\r\ndata:  ", world"}\r\n\r\n'
        'data: {"lifecycle": "done", "finish_reason": "stop"}\r\n\r\n'
    )
    page.route(
        "**/chat?*", lambda route: route.fulfill(body=body, content_type="text/event-stream")
    )
    page.goto(app_server.page_url)

    # WHEN a message is sent
    send(page, "Spell it oddly")
    wait_done(page)

    # THEN the reply is exactly the tokens, and nothing went wrong
    assert page.evaluate(LAST_AI_TEXT) == "Hello, world"
    assert page.locator("#log .msg.error").count() == 0


def test_reasoning_shows_as_a_thinking_block_open_while_it_streams_then_folded(
    axe_page: Any, app_server: AppServer, axe_script: Path
) -> None:
    page = axe_page
    # GIVEN a model that reasons slowly, then answers
    thought = "The user wants a greeting. Keep it short and friendly."
    app_server.script({"reasoning": thought, "content": "Hi **there**.", "delay_ms": 150})
    page.goto(app_server.page_url)

    # WHEN the reply streams, THEN the Thinking block is open while the reasoning arrives
    send(page, "Greet me")
    block = page.locator("#log .msg.ai details.reasoning")
    block.wait_for()
    assert block.locator("summary").inner_text() == "Thinking"
    assert block.get_attribute("open") is not None
    page.wait_for_function(
        "() => (document.querySelector('#log .msg.ai .reasoning-text')?.textContent || '')"
        ".includes('short')"
    )
    assert page.evaluate(LAST_AI_TEXT) in ("", None)  # no reply text yet: it is not content

    # AND it folds away when the first token arrives; it opens again on demand
    wait_done(page)
    assert block.get_attribute("open") is None
    assert page.evaluate(LAST_AI_TEXT) == "Hi there."
    block.locator("summary").click()
    assert block.locator(".reasoning-text").inner_text() == thought
    assert _serious_violations(page, axe_script) == []

    # AND after a reload the block comes back from history, folded, with the same text
    page.reload()
    restored = page.locator("#log .msg.ai details.reasoning")
    restored.wait_for()
    assert restored.get_attribute("open") is None
    restored.locator("summary").click()
    assert restored.locator(".reasoning-text").inner_text() == thought
    assert page.evaluate(LAST_AI_TEXT) == "Hi there."


def test_stop_before_the_session_is_named_still_stops_that_turn(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a first message whose response has not started yet
    held: list[Any] = []
    stops: list[str] = []
    page.route("**/chat?*", lambda route: held.append(route))
    page.route(
        "**/stop", lambda route: (stops.append(route.request.url), route.fulfill(status=202))
    )
    page.goto(app_server.page_url)
    send(page, "Stop me early")
    page.wait_for_function(
        "() => document.querySelector('#stop') && !document.querySelector('#stop').hidden"
    )
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert held

    # WHEN Stop is pressed, and only then does the stream start
    page.click("#stop")
    page.locator("#log .msg.ai .meta.stopped").wait_for()
    sid = "E" * 22
    started = {"lifecycle": "started", "session": sid, "turn": "t", "model": "m"}
    body = f"data: {json.dumps(started)}\n\n" + 'data: {"token": "late text"}\n\n'
    held[0].fulfill(body=body, content_type="text/event-stream")

    # THEN the page stops that turn on the server, keeps the conversation, shows no late text
    deadline = time.monotonic() + 10
    while not stops and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert stops == [f"{app_server.url}/sessions/{sid}/stop"]
    assert session_id(page, app_server) == sid
    assert page.locator("#conv-list .conv-title").all_inner_texts() == ["Stop me early"]
    assert "late text" not in (page.evaluate(LAST_AI_TEXT) or "")
