"""Replies as Markdown in the browser: every element, sanitized, highlighted, copyable, fast."""

from __future__ import annotations

import re
from typing import Any

from .conftest import AppServer
from .test_page import LAST_AI_TEXT, send, wait_done

RICH = """## Results

| name | score |
|:-----|------:|
| ada  | 10    |
| bob  | 7     |

1. first
2. second
   - nested one
   - nested two

> A quoted line.

See [the docs](https://example.com/docs) or mail <mailto:team@example.com>; the [spec][1].

```python
def answer():
    return 42
```

[1]: https://example.com/spec
"""

# What the page may ever hold inside a reply (markdown.js ALLOWED_TAGS, plus its own controls).
ALLOWED = {
    "p", "br", "hr", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span", "div", "button",
}  # fmt: skip

HOSTILE = """Plain <script>window.pwned = 1</script> text.

<img src=x onerror="window.pwned = 2"> and ![cat](https://images.example.net/cat.png "t")

<iframe src="https://evil.example.net/"></iframe>

<!-- a comment --> [click](javascript:window.pwned=3) [data](data:text/html,<b>x</b>)
[rel](/relative) <a href="https://evil.example.net" onclick="window.pwned=4">raw link</a>

**bold <svg onload="window.pwned=5">** `<script>code</script>`

| a | <img src=y onerror="window.pwned=6"> |
|---|---|
| [t](javascript:alert(1)) | <details open ontoggle="window.pwned=7">x</details> |

```html
<script>window.pwned = 8</script>
```
"""

ELEMENT_NAMES = """() => [...new Set([...document.querySelectorAll('#log .msg.ai .body *')]
  .map((n) => n.localName))]"""


def test_markdown_reply_renders_each_element(page: Any, app_server: AppServer) -> None:
    # GIVEN a reply with a heading, a table, nested and numbered lists, a quote, links and code
    app_server.script({"content": RICH, "delay_ms": 2})
    page.goto(app_server.page_url)

    # WHEN it streams in
    send(page, "Show me everything")
    wait_done(page)

    # THEN each is its element (checked through the DOM)
    reply = page.locator("#log .msg.ai .md")
    assert reply.locator("h4").inner_text() == "Results"  # the model's h2 sits under the page's
    assert reply.locator("table th").all_inner_texts() == ["name", "score"]
    assert reply.locator("table tbody tr").count() == 2
    assert reply.locator("table td").nth(1).inner_text() == "10"
    assert reply.locator("ol > li").count() == 2
    assert reply.locator("ol > li ul > li").all_inner_texts() == ["nested one", "nested two"]
    assert reply.locator("blockquote").inner_text().strip() == "A quoted line."
    link = reply.locator("a", has_text="the docs")
    assert link.get_attribute("href") == "https://example.com/docs"
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert link.get_attribute("target") == "_blank"
    assert reply.locator("a[href^='mailto:']").count() == 1
    # a reference-style link resolves although its definition came after the block using it
    assert reply.locator("a", has_text="spec").get_attribute("href") == "https://example.com/spec"
    code = reply.locator("pre code.language-python")
    assert code.inner_text().rstrip() == "def answer():\n    return 42"
    assert code.locator("span.hljs-keyword").first.inner_text() == "def"
    assert reply.locator(".code-bar").get_attribute("data-lang") == "python"
    # AND the meta line shows the token count, the total time and the time to first token
    meta = page.locator("#log .msg.ai .meta").inner_text()
    assert re.fullmatch(r"\d+ tokens · \d+\.\d s · first token \d+\.\d s", meta), meta


def test_hostile_markdown_runs_nothing_and_fetches_nothing(
    page: Any, app_server: AppServer
) -> None:
    # GIVEN a reply full of markup, script, handlers, bad schemes and remote images
    app_server.script({"content": HOSTILE})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(app_server.page_url)

    # WHEN it is shown
    send(page, "Be nasty")
    wait_done(page)
    page.wait_for_timeout(300)

    # THEN no script ran, only allowed elements exist, and nothing was fetched from elsewhere
    assert page.evaluate("window.pwned") is None
    names = set(page.evaluate(ELEMENT_NAMES))
    assert names <= ALLOWED, names - ALLOWED
    assert "table" in names and "a" in names  # the markdown itself still rendered
    assert [u for u in requests if not u.startswith(app_server.url)] == []
    reply = page.locator("#log .msg.ai .md")
    hrefs = reply.locator("a[href]").evaluate_all("(links) => links.map((a) => a.href)")
    assert hrefs and all(re.match(r"https?:|mailto:", h) for h in hrefs), hrefs
    for link in reply.locator("a[href]").all():
        assert link.get_attribute("rel") == "noopener noreferrer"
    attributes = page.evaluate(
        """() => [...document.querySelectorAll('#log .msg.ai .md *')]
          .flatMap((n) => [...n.attributes].map((a) => a.name))"""
    )
    assert not [a for a in attributes if a.startswith("on") or a in ("src", "style")], attributes
    text = page.evaluate(LAST_AI_TEXT) or ""
    assert "<script>window.pwned = 1</script>" in text  # raw HTML shows as the text it is
    assert "cat" in reply.locator("a[href='https://images.example.net/cat.png']").inner_text()
    assert reply.locator("pre code").inner_text().strip() == "<script>window.pwned = 8</script>"


def test_copy_button_puts_the_code_on_the_clipboard(
    browser: Any, app_server: AppServer, probe: Any, request: Any
) -> None:
    from .conftest import _open_page

    app_server.reset()
    pages = _open_page(browser, probe, request, permissions=["clipboard-read", "clipboard-write"])
    page = next(pages)
    try:
        # GIVEN a reply with a code block
        app_server.script({"content": "Here:\n\n```bash\necho 'hi there'\nls -la\n```\n"})
        page.goto(app_server.page_url)
        send(page, "Give me code")
        wait_done(page)

        # WHEN the Copy button is reached by keyboard and pressed
        button = page.get_by_role("button", name="Copy code")
        button.focus()
        page.keyboard.press("Enter")

        # THEN the clipboard holds the code, and the button shows "Copied" for a while
        page.wait_for_function("() => document.querySelector('.copy').dataset.state === 'copied'")
        assert page.evaluate("navigator.clipboard.readText()") == "echo 'hi there'\nls -la"
        assert page.locator(".copy").get_attribute("aria-label") == "Copied"
        shown = page.evaluate(
            "getComputedStyle(document.querySelector('.copy'), '::after').content"
        )
        assert "Copied" in shown
        page.wait_for_function("() => !document.querySelector('.copy').dataset.state", timeout=4000)
        assert page.locator(".copy").get_attribute("aria-label") == "Copy code"
    finally:
        next(pages, None)
