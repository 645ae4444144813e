// Model text -> sanitized DOM: marked (GFM) parses, DOMPurify sanitizes, highlight.js colours code.
//
// Safety: raw HTML in the model's text is shown as text (escaped by the renderer below), and
// every HTML string marked produces goes through DOMPurify with an allow-list before it becomes
// DOM, as a fragment of an inert document (nothing is fetched, no handler runs). Links keep only
// http:, https: and mailto: and open in a new tab with rel="noopener noreferrer"; images are
// never loaded: they become a plain link with their alt text.
//
// Speed: MarkdownView renders a streaming reply incrementally. The lexer splits the text into
// top-level blocks; every block but the last is final, rendered once and kept. Only the open
// tail is parsed again, at most once per animation frame.
import { Marked } from './vendor/marked/marked.esm.js';
import DOMPurify from './vendor/dompurify/purify.es.js';
import hljs from './vendor/highlight.js/core.min.js';
import bash from './vendor/highlight.js/languages/bash.min.js';
import c from './vendor/highlight.js/languages/c.min.js';
import cpp from './vendor/highlight.js/languages/cpp.min.js';
import css from './vendor/highlight.js/languages/css.min.js';
import diff from './vendor/highlight.js/languages/diff.min.js';
import go from './vendor/highlight.js/languages/go.min.js';
import java from './vendor/highlight.js/languages/java.min.js';
import javascript from './vendor/highlight.js/languages/javascript.min.js';
import json from './vendor/highlight.js/languages/json.min.js';
import markdown from './vendor/highlight.js/languages/markdown.min.js';
import python from './vendor/highlight.js/languages/python.min.js';
import rust from './vendor/highlight.js/languages/rust.min.js';
import shell from './vendor/highlight.js/languages/shell.min.js';
import sql from './vendor/highlight.js/languages/sql.min.js';
import typescript from './vendor/highlight.js/languages/typescript.min.js';
import xml from './vendor/highlight.js/languages/xml.min.js';
import yaml from './vendor/highlight.js/languages/yaml.min.js';

const LANGUAGES = {
  bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, shell, sql,
  typescript, xml, yaml,
};
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

const ALLOWED_TAGS = [
  'p', 'br', 'hr', 'h3', 'h4', 'h5', 'h6', 'strong', 'em', 'del', 'code', 'pre', 'blockquote',
  'ul', 'ol', 'li', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'a', 'span',
];
const ALLOWED_ATTR = ['href', 'title', 'start', 'align', 'class'];
const SAFE_URL = /^(?:https?:|mailto:)/i;
const LINK_DEFINITION = /^ {0,3}\[[^\]]+\]:/m;
// Classes the renderer itself writes; anything else the text tries to set is dropped.
const SAFE_CLASS = /^(?:hljs(?:-[\w-]+)?|language-[\w+-]+|[\w-]+_)$/;

const escapeHtml = (text) => String(text)
  .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

const purify = DOMPurify(window);
purify.addHook('uponSanitizeAttribute', (node, data) => {
  if (data.attrName === 'class') {
    data.attrValue = data.attrValue.split(/\s+/).filter((c) => SAFE_CLASS.test(c)).join(' ');
  }
});
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName === 'A') {
    if (node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  }
});

function codeLanguage(lang) {
  const name = String(lang || '').trim().split(/\s+/)[0].toLowerCase().replace(/[^\w+-]/g, '');
  return name && hljs.getLanguage(name) ? name : '';
}

const parser = new Marked({ gfm: true, breaks: true });
parser.use({
  renderer: {
    // Raw HTML in the text is shown as the text it is.
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text)}</p>\n` : escapeHtml(text);
    },
    // The page's own headings are h1/h2: the model's start at h3.
    heading({ tokens, depth }) {
      const level = Math.min(depth + 2, 6);
      return `<h${level}>${this.parser.parseInline(tokens)}</h${level}>\n`;
    },
    image({ href, text }) {
      const label = escapeHtml(text || href || 'image');
      return SAFE_URL.test(href || '') ? `<a href="${escapeHtml(href)}">${label}</a>` : label;
    },
    checkbox({ checked }) {
      return checked ? '☑ ' : '☐ ';
    },
    code({ text, lang }) {
      const language = codeLanguage(lang);
      const body = language
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : escapeHtml(text);
      const cls = language ? `hljs language-${language}` : 'hljs';
      return `<pre><code class="${cls}">${body}</code></pre>\n`;
    },
  },
});

/** Sanitized DOM for HTML that marked produced; top-level whitespace between blocks dropped. */
function toFragment(html) {
  const fragment = purify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: SAFE_URL,
    ALLOW_DATA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  });
  for (const node of [...fragment.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.textContent.trim()) node.remove();
  }
  return fragment;
}

/** The whole text as sanitized DOM, rendered at once (history, and the naive baseline). */
export function renderMarkdown(text) {
  return toFragment(parser.parse(text));
}

function renderTokens(tokens, links) {
  const list = [...tokens];
  list.links = links;
  return toFragment(parser.parser(list));
}

/**
 * A reply's Markdown in `el`, growing as text is appended.
 *
 * `decorate(fragment)` adds the page's own controls (Copy buttons) to freshly rendered DOM.
 * With `incremental: false` every frame re-renders the whole text (kept to measure against).
 */
export class MarkdownView {
  constructor(el, { decorate = () => {}, incremental = true } = {}) {
    this.el = el;
    this.decorate = decorate;
    this.incremental = incremental;
    this.text = '';
    this.settled = 0; // length of the text rendered as final blocks
    this.tail = []; // the nodes of the open last block
    this.frame = 0;
  }

  append(text) {
    this.text += text.replace(/\r\n?/g, '\n');
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  /**
   * The text is complete: render what is pending. A reference-style link defined below the
   * block that uses it could not resolve in a block already settled, so such a reply is
   * rendered whole, once.
   */
  finish() {
    if (this.incremental && LINK_DEFINITION.test(this.text)) {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = 0;
      const fragment = renderMarkdown(this.text);
      this.decorate(fragment);
      this.el.replaceChildren(fragment);
      this.settled = this.text.length;
      this.tail = [];
      return;
    }
    this.flush();
  }

  /** Render what is pending now (a frame came). */
  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (!this.incremental) {
      const fragment = renderMarkdown(this.text);
      this.decorate(fragment);
      this.el.replaceChildren(fragment);
      return;
    }
    const open = this.text.slice(this.settled);
    const tokens = parser.lexer(open);
    let size = 0;
    for (const token of tokens) size += token.raw.length;
    let last = tokens.length - 1;
    while (last > 0 && tokens[last].type === 'space') last -= 1;
    for (const node of this.tail) node.remove();
    if (size !== open.length) {
      // The lexer's raw pieces must add up to the text to cut it safely; if not, start over.
      this.settled = 0;
      this.tail = [];
      this.el.replaceChildren();
      const fragment = renderMarkdown(this.text);
      this.decorate(fragment);
      this.tail = [...fragment.childNodes];
      this.el.appendChild(fragment);
      return;
    }
    if (last > 0) {
      const done = renderTokens(tokens.slice(0, last), tokens.links);
      this.decorate(done);
      this.el.appendChild(done);
      for (let i = 0; i < last; i += 1) this.settled += tokens[i].raw.length;
    }
    const tail = renderTokens(tokens.slice(Math.max(last, 0)), tokens.links);
    this.decorate(tail);
    this.tail = [...tail.childNodes];
    this.el.appendChild(tail);
  }
}
