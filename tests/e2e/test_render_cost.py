"""Main-thread cost per token of rendering a streamed Markdown reply: incremental vs naive.

The page's MarkdownView is fed a 2,000-token reply (headings, tables, code, lists) a few tokens
per animation frame, as a fast model streams. Each frame's render (parse, sanitize, DOM update
and the layout it forces) is measured with performance.mark/measure inside the page, once for
the incremental renderer (final blocks cached, only the open tail re-parsed) and once for a naive
full re-render of the whole text every frame. Both figures are printed (README "The page").
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import ARTIFACTS, AppServer

TOKENS = 2000
TOKENS_PER_FRAME = 4
_WORDISH = re.compile(r"\s*(?:\w+|[^\w\s]+)|\s+")  # the simulator's chunking (split_words)


def markdown_reply(tokens: int = TOKENS) -> str:
    """A model-like Markdown reply, cut to exactly `tokens` word-ish tokens."""
    sections = []
    for i in range(1, 40):
        sections.append(
            f"## Part {i}: results\n\n"
            f"The run **{i}** finished; see `run_{i}.log` for details and the table below.\n\n"
            "| metric | before | after | change |\n|:--|--:|--:|--:|\n"
            + "".join(f"| m{j} | {j * i} | {j * i + 3} | +{j}% |\n" for j in range(1, 5))
            + "\n- checked the inputs\n  - nested detail one\n  - nested detail two\n"
            "- compared the outputs\n\n1. build\n2. test\n3. ship\n\n"
            f"```python\ndef step_{i}(values):\n    total = sum(values)\n"
            f"    return total * {i}\n```\n\n"
        )
    pieces = _WORDISH.findall("".join(sections))
    assert len(pieces) >= tokens
    return "".join(pieces[:tokens])


MEASURE = """async ({ text, incremental, perFrame }) => {
  const { MarkdownView } = await import(new URL('markdown.js', location.href).href);
  const host = document.createElement('div');
  host.className = 'md';
  document.getElementById('log').appendChild(host);
  const view = new MarkdownView(host, { incremental });
  const render = view.flush.bind(view);
  const name = incremental ? 'incremental' : 'naive';
  let frames = 0;
  view.flush = () => {
    performance.mark(`${name}-start`);
    render();
    void host.offsetHeight; // the style and layout this frame's DOM change costs
    performance.measure(name, `${name}-start`);
    frames += 1;
  };
  const tokens = text.match(/\\s*(?:\\w+|[^\\w\\s]+)|\\s+/g);
  for (let i = 0; i < tokens.length; i += 1) {
    view.append(tokens[i]);
    if (i % perFrame === perFrame - 1) await new Promise((done) => requestAnimationFrame(done));
  }
  view.flush();
  const total = performance.getEntriesByName(name).reduce((sum, e) => sum + e.duration, 0);
  const html = host.innerHTML;
  host.remove();
  return { tokens: tokens.length, frames, total, html };
}"""


def test_incremental_render_costs_less_main_thread_time_per_token(
    page: Any, app_server: AppServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the page and a 2,000-token Markdown reply
    page.goto(app_server.page_url)
    page.wait_for_function("() => document.documentElement.classList.contains('ready')")
    text = markdown_reply()

    # WHEN it is streamed through each renderer
    results = {
        mode: page.evaluate(
            MEASURE,
            {"text": text, "incremental": mode == "incremental", "perFrame": TOKENS_PER_FRAME},
        )
        for mode in ("incremental", "naive")
    }

    # THEN both end with the same DOM, and the incremental one costs less per token
    incremental, naive = results["incremental"], results["naive"]
    assert incremental["tokens"] == naive["tokens"] == TOKENS
    assert incremental["html"] == naive["html"]
    assert incremental["html"].count("<table") == text.count("| metric |")
    per_token = {mode: r["total"] / r["tokens"] for mode, r in results.items()}
    report = {
        "tokens": TOKENS,
        "tokens_per_frame": TOKENS_PER_FRAME,
        "frames": incremental["frames"],
        "chars": len(text),
        "ms_per_token": {mode: round(value, 4) for mode, value in per_token.items()},
        "ms_total": {mode: round(r["total"], 1) for mode, r in results.items()},
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "render-cost.json").write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\nrender cost, {TOKENS}-token Markdown reply, {TOKENS_PER_FRAME} tokens/frame: "
            f"incremental {per_token['incremental']:.3f} ms/token "
            f"({report['ms_total']['incremental']} ms), "
            f"naive full re-render {per_token['naive']:.3f} ms/token "
            f"({report['ms_total']['naive']} ms)"
        )
    assert per_token["incremental"] < per_token["naive"]
