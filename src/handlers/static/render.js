// The conversation log: the one renderer for live replies and for history.
//
// Model text reaches the DOM only through markdown.js (sanitized); everything else here is built
// from text nodes.
import { MarkdownView } from './markdown.js';

const $ = (id) => document.getElementById(id);
const log = $('log');
const welcome = $('welcome');
const jumpBtn = $('jump');
const status = $('status');
const reducedMotion = window.matchMedia('(prefers-reduced-motion: reduce)').matches;
const COPIED_MS = 2000;

let stick = true; // follow new output unless the user scrolled up

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function srLabel(text) {
  return el('span', 'visually-hidden', text);
}

export function announce(text) {
  status.textContent = '';
  // A fresh text node in a later task makes screen readers announce repeats too.
  setTimeout(() => { status.textContent = text; }, 50);
}

function nearBottom() {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
}

export function follow() {
  if (stick) log.scrollTop = log.scrollHeight;
  else jumpBtn.hidden = false;
}

export function followLatest() {
  stick = true;
  jumpBtn.hidden = true;
  log.scrollTop = log.scrollHeight;
}

log.addEventListener('scroll', () => {
  stick = nearBottom();
  if (stick) jumpBtn.hidden = true;
});

jumpBtn.addEventListener('click', () => {
  stick = true;
  jumpBtn.hidden = true;
  log.scrollTo({ top: log.scrollHeight, behavior: reducedMotion ? 'auto' : 'smooth' });
  $('prompt').focus();
});

function addToLog(node) {
  welcome.hidden = true;
  log.appendChild(node);
  follow();
  return node;
}

export function clearLog() {
  for (const node of [...log.children]) if (node !== welcome) node.remove();
  welcome.hidden = false;
}

// ---------- code blocks: a language label and a Copy button ----------

async function copyCode(button, code) {
  try {
    await navigator.clipboard.writeText(code.textContent);
  } catch (_) {
    announce('Copying failed: the browser refused access to the clipboard');
    return;
  }
  button.dataset.state = 'copied';
  button.setAttribute('aria-label', 'Copied');
  announce('Code copied');
  clearTimeout(button.copiedTimer);
  button.copiedTimer = setTimeout(() => {
    delete button.dataset.state;
    button.setAttribute('aria-label', 'Copy code');
  }, COPIED_MS);
}

/** Give each code block of freshly rendered reply DOM a toolbar (its labels come from CSS). */
function decorate(fragment) {
  for (const pre of fragment.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    if (!code) continue;
    pre.tabIndex = 0; // a scrollable region must be reachable by keyboard
    const block = el('div', 'code');
    const bar = el('div', 'code-bar');
    const lang = [...code.classList].find((c) => c.startsWith('language-'));
    if (lang) bar.dataset.lang = lang.slice('language-'.length);
    const button = el('button', 'copy');
    button.type = 'button';
    button.setAttribute('aria-label', 'Copy code');
    button.addEventListener('click', () => copyCode(button, code));
    bar.appendChild(button);
    pre.replaceWith(block);
    block.append(bar, pre);
  }
}

// ---------- bubbles ----------

export function userBubble(text) {
  const node = el('div', 'msg user');
  node.append(srLabel('You: '), document.createTextNode(text));
  return addToLog(node);
}

export function noteBubble(text) {
  return addToLog(el('div', 'msg note', text));
}

/** An assistant bubble: text segments and tool-chip rows, in arrival order. */
export class Reply {
  constructor() {
    this.node = el('div', 'msg ai');
    this.node.appendChild(srLabel('Assistant: '));
    this.body = el('div', 'body');
    this.node.appendChild(this.body);
    this.segment = null; // the MarkdownView text is appended to
    this.segments = [];
    this.text = '';
    this.chips = new Map();
    this.thinking = null;
    this.reconnecting = null;
    this.reasoning = null; // the collapsed block reasoning deltas go to
    addToLog(this.node);
  }

  /**
   * Reasoning is not the reply: plain text in a "Thinking" block above what follows it. Live,
   * the block is open while the reasoning streams and closes when the reply's first token (or
   * a tool call) arrives, unless the reader opened or closed it by hand; from history it is
   * closed. Reasoning after a tool call starts a block of its own.
   */
  appendReasoning(text, { live = false } = {}) {
    if (!text) return;
    if (!this.reasoning) {
      const block = el('details', 'reasoning');
      const body = el('div', 'reasoning-text');
      block.append(el('summary', '', 'Thinking'), body);
      block.dataset.auto = live ? 'open' : '';
      if (live) {
        block.dataset.expected = 'true'; // the toggle event this fires is ours, not the reader's
        block.open = true;
      }
      // A toggle by the reader (not by this code) makes the block theirs to open and close.
      block.addEventListener('toggle', () => {
        if (block.dataset.expected !== String(block.open)) block.dataset.auto = '';
        delete block.dataset.expected;
      });
      if (live) this.setThinking(false);
      this.body.appendChild(block);
      this.reasoning = body;
      this.segment = null; // reply text after it starts below it
    }
    this.reasoning.appendChild(document.createTextNode(text));
    if (live) follow();
  }

  /** The reasoning so far is over (a token or a tool call came): fold its block away. */
  endReasoning() {
    if (!this.reasoning) return;
    const block = this.reasoning.parentElement;
    if (block.dataset.auto === 'open' && block.open) {
      block.dataset.expected = 'false';
      block.open = false;
    }
    block.dataset.auto = '';
    this.reasoning = null;
  }

  /** A line saying the stream dropped and the page is getting it back. */
  setReconnecting(on) {
    if (on && !this.reconnecting) {
      this.setThinking(false);
      this.reconnecting = el('div', 'thinking reconnecting', 'reconnecting…');
      this.node.appendChild(this.reconnecting);
      follow();
    } else if (!on && this.reconnecting) {
      this.reconnecting.remove();
      this.reconnecting = null;
    }
  }

  setThinking(on) {
    if (on && !this.thinking) {
      const t = el('div', 'thinking');
      const dots = el('span', 'dots');
      dots.setAttribute('aria-hidden', 'true');
      dots.append(el('span'), el('span'), el('span'));
      t.append(dots, document.createTextNode('thinking…'));
      this.thinking = t;
      this.node.appendChild(t);
      follow();
    } else if (!on && this.thinking) {
      this.thinking.remove();
      this.thinking = null;
    }
  }

  /** Append reply text; it is rendered at the next animation frame (or on `flush`). */
  appendText(text) {
    if (!text) return;
    this.setThinking(false);
    this.endReasoning();
    if (!this.segment) {
      const container = el('div', 'md');
      this.body.appendChild(container);
      this.segment = new MarkdownView(container, { decorate });
      this.segments.push(this.segment);
    }
    this.segment.append(text);
    this.text += text;
    if (!this.followFrame) {
      this.followFrame = requestAnimationFrame(() => { this.followFrame = 0; follow(); });
    }
  }

  /** The reply is complete (or stopped): render all of its text now. */
  finish() {
    for (const segment of this.segments) segment.finish();
    follow();
  }

  toolRow() {
    this.endReasoning();
    let row = this.body.lastElementChild;
    if (!row || !row.classList.contains('tools')) {
      row = el('div', 'tools');
      this.body.appendChild(row);
    }
    this.segment = null; // text after a tool call starts a new segment below it
    return row;
  }

  addChip(id, name) {
    this.setThinking(false);
    const chip = el('span', 'chip');
    chip.dataset.state = 'running';
    chip.append(el('span', 'name', `⚙ ${name}`), ' ', el('span', 'out', ''));
    chip.title = `Running tool ${name}`;
    this.toolRow().appendChild(chip);
    this.chips.set(id, chip);
    follow();
    return chip;
  }

  setChipResult(id, name, ok, output) {
    const chip = this.chips.get(id) || this.addChip(id, name || 'tool');
    chip.dataset.state = ok ? 'ok' : 'failed';
    const shown = String(output ?? '').replace(/\s+/g, ' ').trim();
    chip.querySelector('.out').textContent = `→ ${shown.length > 60 ? `${shown.slice(0, 59)}…` : shown}`;
    chip.title = `${name}: ${ok ? '' : 'failed: '}${shown}`;
  }

  addMeta(text, className) {
    this.node.appendChild(el('div', `meta${className ? ` ${className}` : ''}`, text));
    follow();
  }

  remove() {
    this.node.remove();
  }
}

export function errorBubble(message, onRetry) {
  const node = el('div', 'msg error');
  node.setAttribute('role', 'alert');
  node.appendChild(el('p', '', message));
  if (onRetry) {
    const retry = el('button', '', 'Retry');
    retry.type = 'button';
    retry.addEventListener('click', () => onRetry(node));
    node.appendChild(retry);
  }
  return addToLog(node);
}

/** A stored conversation (GET /sessions/{id} messages), drawn with the live turn's bubbles. */
export function renderHistory(messages) {
  let reply = null;
  const replies = [];
  for (const m of messages) {
    if (!m || typeof m !== 'object') continue;
    const content = typeof m.content === 'string' ? m.content : '';
    if (m.role === 'user') {
      reply = null;
      userBubble(content);
    } else if (m.role === 'assistant') {
      if (!reply) {
        reply = new Reply();
        replies.push(reply);
      }
      if (typeof m.reasoning === 'string') {
        reply.appendReasoning(m.reasoning);
        reply.endReasoning();
      }
      reply.appendText(content);
      for (const call of Array.isArray(m.tool_calls) ? m.tool_calls : []) {
        reply.addChip(String(call.id), String(call.name || 'tool'));
      }
      if (m.status === 'interrupted') reply.addMeta('Stopped', 'stopped');
      else if (m.status === 'failed') reply.addMeta('Failed', 'stopped');
    } else if (m.role === 'tool' && reply) {
      reply.setChipResult(String(m.tool_call_id), String(m.name || 'tool'), true, content);
    }
  }
  for (const r of replies) r.finish();
}
