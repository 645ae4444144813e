// SSE Chat page: vanilla JS, no dependencies, no inline handlers (works under script-src 'self').
//
// Protocol (DESIGN §4): GET {api}/chat?prompt=..&session=.. is an EventSource stream of JSON
// messages: started, token, tool_call, tool_result, error, done. The page closes the stream on
// done and on error, because an EventSource left open reconnects and would start a new turn.
// Model output only ever reaches the DOM through text nodes (see renderMarkdown).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const welcome = $('welcome');
  const form = $('composer');
  const input = $('prompt');
  const sendBtn = $('send');
  const stopBtn = $('stop');
  const newBtn = $('new-chat');
  const jumpBtn = $('jump');
  const badge = $('model');
  const status = $('status');
  const keyForm = $('key-form');
  const keyInput = $('key-input');

  const params = new URLSearchParams(location.search);
  const API = resolveApi(params.get('api'));
  const ROLE = params.get('role') || '';
  const reducedMotion = window.matchMedia('(prefers-reduced-motion: reduce)').matches;

  /** The server to talk to: ?api=, else the directory the page was served from. */
  function resolveApi(given) {
    if (given) {
      try {
        const url = new URL(given);
        if (url.protocol === 'http:' || url.protocol === 'https:') {
          return url.href.replace(/\/+$/, '');
        }
      } catch (_) { /* fall through to the default */ }
    }
    if (location.protocol === 'http:' || location.protocol === 'https:') {
      return new URL('.', location.href).href.replace(/\/+$/, '');
    }
    return 'http://127.0.0.1:8000';
  }

  // localStorage, namespaced per API so a page pointed at another server never sends it this
  // server's key or session; storage can throw (private modes, file://), which only costs memory.
  const store = {
    key: (name) => `sse-chat:${API}:${name}`,
    get(name) {
      try { return localStorage.getItem(this.key(name)); } catch (_) { return null; }
    },
    set(name, value) {
      try { localStorage.setItem(this.key(name), value); } catch (_) { /* memory only */ }
    },
    remove(name) {
      try { localStorage.removeItem(this.key(name)); } catch (_) { /* memory only */ }
    },
  };

  let session = store.get('session');
  let accessKey = store.get('key');
  let turn = null; // the reply being streamed: {prompt, source, bubble, ...}
  let stick = true; // follow new output unless the user scrolled up

  // ---------- small DOM helpers ----------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function srLabel(text) {
    return el('span', 'visually-hidden', text);
  }

  function announce(text) {
    status.textContent = '';
    // A fresh text node in a later task makes screen readers announce repeats too.
    setTimeout(() => { status.textContent = text; }, 50);
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  }

  function follow() {
    if (stick) {
      log.scrollTop = log.scrollHeight;
    } else {
      jumpBtn.hidden = false;
    }
  }

  log.addEventListener('scroll', () => {
    stick = nearBottom();
    if (stick) jumpBtn.hidden = true;
  });

  jumpBtn.addEventListener('click', () => {
    stick = true;
    jumpBtn.hidden = true;
    log.scrollTo({ top: log.scrollHeight, behavior: reducedMotion ? 'auto' : 'smooth' });
    input.focus();
  });

  function addToLog(node) {
    welcome.hidden = true;
    log.appendChild(node);
    follow();
    return node;
  }

  // ---------- safe markdown subset ----------
  //
  // Hand-written on purpose: a dozen lines of DOM building keep the page dependency-free and
  // make the safety argument trivial (no HTML parsing at all). Supported: ``` fences, `code`,
  // **bold**, "-"/"*"/"1." lists, paragraphs. Everything else stays literal text.

  const INLINE = /(`[^`\n]+`)|(\*\*(?=\S)[^\n]*?\S\*\*)/g;

  function appendInline(parent, text) {
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      const token = match[0];
      if (match[1]) parent.appendChild(el('code', '', token.slice(1, -1)));
      else parent.appendChild(el('strong', '', token.slice(2, -2)));
      last = match.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function renderMarkdown(container, src) {
    const out = document.createDocumentFragment();
    const lines = src.split('\n');
    let para = null;
    let list = null;
    for (let i = 0; i < lines.length; i += 1) {
      const line = lines[i];
      const fence = /^\s*```\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        para = null;
        list = null;
        const body = [];
        i += 1;
        while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) {
          body.push(lines[i]);
          i += 1;
        }
        const pre = el('pre');
        const code = el('code', '', body.join('\n'));
        if (fence[1]) code.dataset.lang = fence[1];
        pre.appendChild(code);
        pre.tabIndex = 0; // a scrollable region must be reachable by keyboard
        out.appendChild(pre);
        continue;
      }
      if (!line.trim()) {
        para = null;
        list = null;
        continue;
      }
      const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
      const numbered = /^\s*(\d{1,9})[.)]\s+(.*)$/.exec(line);
      if (bullet || numbered) {
        const tag = bullet ? 'ul' : 'ol';
        if (!list || list.tagName.toLowerCase() !== tag) {
          list = el(tag);
          if (numbered && numbered[1] !== '1') list.start = Number(numbered[1]);
          out.appendChild(list);
        }
        para = null;
        const li = el('li');
        appendInline(li, bullet ? bullet[1] : numbered[2]);
        list.appendChild(li);
        continue;
      }
      const heading = /^#{1,6}\s+(.*)$/.exec(line);
      if (heading) {
        list = null;
        para = null;
        const p = el('p');
        p.appendChild(el('strong', '', heading[1]));
        out.appendChild(p);
        continue;
      }
      if (list && /^\s{2,}\S/.test(line)) {
        // A continuation line of the last list item.
        const li = list.lastElementChild;
        li.appendChild(document.createTextNode('\n'));
        appendInline(li, line.trim());
        continue;
      }
      list = null;
      if (para) {
        para.appendChild(document.createTextNode('\n'));
      } else {
        para = el('p');
        out.appendChild(para);
      }
      appendInline(para, line);
    }
    container.replaceChildren(out);
  }

  // ---------- bubbles ----------

  function userBubble(text) {
    const node = el('div', 'msg user');
    node.append(srLabel('You: '), document.createTextNode(text));
    return addToLog(node);
  }

  function noteBubble(text) {
    return addToLog(el('div', 'msg note', text));
  }

  /** An assistant bubble: a sequence of text segments and tool-chip rows, in arrival order. */
  function aiBubble() {
    const node = el('div', 'msg ai');
    node.appendChild(srLabel('Assistant: '));
    const body = el('div', 'body');
    node.appendChild(body);
    addToLog(node);
    return { node, body, segment: null, text: '', chips: new Map(), thinking: null, pending: false };
  }

  function setThinking(bubble, on) {
    if (on && !bubble.thinking) {
      const t = el('div', 'thinking');
      const dots = el('span', 'dots');
      dots.setAttribute('aria-hidden', 'true');
      dots.append(el('span'), el('span'), el('span'));
      t.append(dots, document.createTextNode('thinking…'));
      bubble.thinking = t;
      bubble.node.appendChild(t);
      follow();
    } else if (!on && bubble.thinking) {
      bubble.thinking.remove();
      bubble.thinking = null;
    }
  }

  function appendText(bubble, text) {
    setThinking(bubble, false);
    if (!bubble.segment) {
      bubble.segment = { el: el('div', 'md'), text: '' };
      bubble.body.appendChild(bubble.segment.el);
    }
    bubble.segment.text += text;
    bubble.text += text;
    scheduleRender(bubble);
  }

  // Re-render at most once per frame: tokens can arrive faster than the screen refreshes.
  function scheduleRender(bubble) {
    if (bubble.pending) return;
    bubble.pending = true;
    requestAnimationFrame(() => flushRender(bubble));
  }

  function flushRender(bubble) {
    bubble.pending = false;
    if (bubble.segment) renderMarkdown(bubble.segment.el, bubble.segment.text);
    follow();
  }

  function toolRow(bubble) {
    let row = bubble.body.lastElementChild;
    if (!row || !row.classList.contains('tools')) {
      row = el('div', 'tools');
      bubble.body.appendChild(row);
    }
    bubble.segment = null; // text after a tool call starts a new segment below it
    return row;
  }

  function addChip(bubble, id, name) {
    setThinking(bubble, false);
    const chip = el('span', 'chip');
    chip.dataset.state = 'running';
    chip.append(el('span', 'name', `⚙ ${name}`), ' ', el('span', 'out', ''));
    chip.title = `Running tool ${name}`;
    toolRow(bubble).appendChild(chip);
    bubble.chips.set(id, chip);
    follow();
    return chip;
  }

  function setChipResult(bubble, id, name, ok, output) {
    const chip = bubble.chips.get(id) || addChip(bubble, id, name || 'tool');
    chip.dataset.state = ok ? 'ok' : 'failed';
    const shown = String(output ?? '').replace(/\s+/g, ' ').trim();
    chip.querySelector('.out').textContent = `→ ${shown.length > 60 ? `${shown.slice(0, 59)}…` : shown}`;
    chip.title = `${name}: ${ok ? '' : 'failed: '}${shown}`;
  }

  function addMeta(bubble, text, className) {
    const meta = el('div', `meta${className ? ` ${className}` : ''}`, text);
    bubble.node.appendChild(meta);
    follow();
  }

  function errorBubble(message, retryPrompt) {
    const node = el('div', 'msg error');
    node.setAttribute('role', 'alert');
    node.appendChild(el('p', '', message));
    if (retryPrompt !== undefined) {
      const retry = el('button', '', 'Retry');
      retry.type = 'button';
      retry.addEventListener('click', () => {
        if (turn) return;
        node.remove();
        send(retryPrompt, { retry: true });
      });
      node.appendChild(retry);
    }
    return addToLog(node);
  }

  function showModel(model) {
    if (!model) return;
    const simulated = /simulat/i.test(model);
    badge.textContent = simulated ? 'simulator' : model;
    badge.classList.toggle('sim', simulated);
    badge.title = simulated
      ? `Replies come from the built-in simulator (${model}): no OpenAI key is configured`
      : `Model: ${model}`;
    badge.hidden = false;
  }

  // ---------- streaming a turn ----------

  function authHeaders() {
    return accessKey ? { Authorization: `Bearer ${accessKey}` } : {};
  }

  function chatUrl(prompt) {
    const url = new URL(`${API}/chat`);
    url.searchParams.set('prompt', prompt);
    if (session) url.searchParams.set('session', session);
    if (ROLE) url.searchParams.set('role', ROLE);
    if (accessKey) url.searchParams.set('key', accessKey); // EventSource cannot send headers
    return url.href;
  }

  function setStreaming(on) {
    const hadFocus = document.activeElement;
    input.disabled = on;
    sendBtn.hidden = on;
    stopBtn.hidden = !on;
    for (const b of document.querySelectorAll('.suggestion')) b.disabled = on;
    if (on) {
      if (hadFocus === input || hadFocus === sendBtn || hadFocus === document.body || !hadFocus) {
        stopBtn.focus();
      }
    } else if (
      !hadFocus || hadFocus === document.body || hadFocus === stopBtn || hadFocus === input
    ) {
      input.focus();
    }
  }

  function send(prompt, { retry = false, renewed = false } = {}) {
    if (turn || !prompt.trim()) return;
    if (!retry) userBubble(prompt);
    stick = true;
    jumpBtn.hidden = true;
    const bubble = aiBubble();
    setThinking(bubble, true);
    turn = { prompt, bubble, source: null, received: false, startedAt: performance.now(), renewed };
    setStreaming(true);
    open(turn);
  }

  function open(current) {
    const source = new EventSource(chatUrl(current.prompt));
    current.source = source;
    source.onmessage = (event) => {
      if (turn !== current) return;
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch (_) {
        return; // not ours to understand; clients ignore what they do not know
      }
      if (msg && typeof msg === 'object') {
        current.received = true;
        handle(current, msg);
      }
    };
    source.onerror = () => {
      source.close(); // never let EventSource reconnect: that would start a second turn
      if (turn !== current) return;
      if (current.received) {
        finish(current, 'failed');
        errorBubble('The connection was lost before the reply finished.', current.prompt);
      } else {
        diagnose(current);
      }
    };
  }

  function handle(current, msg) {
    const { bubble } = current;
    if (msg.lifecycle === 'started') {
      if (typeof msg.session === 'string' && msg.session) {
        session = msg.session;
        store.set('session', session);
      }
      showModel(msg.model);
    } else if (typeof msg.token === 'string') {
      appendText(bubble, msg.token);
    } else if (msg.tool_call && typeof msg.tool_call === 'object') {
      addChip(bubble, String(msg.tool_call.id), String(msg.tool_call.name || 'tool'));
    } else if (msg.tool_result && typeof msg.tool_result === 'object') {
      const r = msg.tool_result;
      setChipResult(bubble, String(r.id), String(r.name || 'tool'), r.ok !== false, r.output);
      setThinking(bubble, true); // the model continues with the result
    } else if (typeof msg.error === 'string') {
      finish(current, 'failed');
      errorBubble(`Something went wrong: ${msg.error}`, current.prompt);
    } else if (msg.lifecycle === 'done') {
      finish(current, 'done', msg);
    }
  }

  function finish(current, how, done) {
    if (turn !== current) return;
    current.source.close();
    turn = null;
    const { bubble } = current;
    setThinking(bubble, false);
    flushRender(bubble);
    if (how === 'done') {
      const parts = [];
      const secs = ((performance.now() - current.startedAt) / 1000).toFixed(1);
      const usage = done && done.usage;
      if (usage && Number.isFinite(usage.completion_tokens)) {
        parts.push(`${usage.completion_tokens} tokens`);
      }
      parts.push(`${secs} s`);
      if (done && done.finish_reason === 'length') parts.push('cut off at the token limit');
      addMeta(bubble, parts.join(' · '));
    } else if (how === 'stopped') {
      bubble.node.classList.add('stopped');
      addMeta(bubble, bubble.text ? 'Stopped' : 'Stopped before the first token', 'stopped');
      announce('Reply stopped');
    } else if (how === 'failed' && !bubble.text && !bubble.chips.size) {
      bubble.node.remove();
    }
    setStreaming(false);
  }

  function stop() {
    if (turn) finish(turn, 'stopped');
  }

  /** The stream failed before any message: ask the server why (EventSource hides the status). */
  async function diagnose(current) {
    let res = null;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10000);
    try {
      res = await fetch(chatUrl(current.prompt), {
        headers: { Accept: 'text/event-stream', ...authHeaders() },
        signal: controller.signal,
        cache: 'no-store',
      });
    } catch (_) {
      res = null;
    }
    if (turn !== current) { controller.abort(); return; } // stopped meanwhile
    clearTimeout(timer);
    if (res && res.ok && (res.headers.get('Content-Type') || '').startsWith('text/event-stream')) {
      // The server accepts the turn now (the first failure was passing): this response is the
      // turn, so show it rather than drop it (a dropped one would be stored as interrupted).
      current.source = { close: () => controller.abort() };
      await readStream(current, res.body);
      return;
    }
    let body = null;
    if (res && !res.ok) {
      try { body = await res.json(); } catch (_) { body = null; }
    }
    controller.abort();
    const message = body && typeof body.error === 'string' ? body.error : '';

    if (res && res.status === 401) {
      finish(current, 'failed');
      askForKey(current.prompt, Boolean(accessKey));
      return;
    }
    if (res && res.status === 404 && session && !current.renewed) {
      // The session expired on the server: start a new conversation with the same prompt.
      forgetSession();
      finish(current, 'failed');
      noteBubble('The previous conversation has expired; starting a new one.');
      send(current.prompt, { retry: true, renewed: true });
      return;
    }
    finish(current, 'failed');
    if (!res) {
      errorBubble(`Cannot reach the server at ${API}. Check the connection and try again.`, current.prompt);
    } else if (res.status === 429) {
      const wait = res.headers.get('Retry-After');
      errorBubble(`${message || 'Too many requests.'}${wait ? ` Try again in ${wait} s.` : ''}`, current.prompt);
    } else if (res.status === 409) {
      errorBubble(message || 'Another reply is still running in this conversation.', current.prompt);
    } else if (res.status === 413 || res.status === 400 || res.status === 422) {
      errorBubble(message || `The server refused the message (HTTP ${res.status}).`, undefined);
    } else if (!res.ok) {
      errorBubble(message || `The server answered HTTP ${res.status}.`, current.prompt);
    } else {
      errorBubble('The connection failed. Please try again.', current.prompt);
    }
  }

  /** Read an SSE body from fetch() into the same handler EventSource feeds. */
  async function readStream(current, stream) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:'))
            .map((l) => l.slice(l.startsWith('data: ') ? 6 : 5)).join('\n');
          if (!data || turn !== current) continue;
          let msg;
          try { msg = JSON.parse(data); } catch (_) { continue; }
          if (msg && typeof msg === 'object') {
            current.received = true;
            handle(current, msg);
          }
        }
      }
    } catch (_) {
      // aborted by Stop, or the connection dropped: handled below
    }
    if (turn === current) {
      finish(current, 'failed');
      errorBubble('The connection was lost before the reply finished.', current.prompt);
    }
  }

  // ---------- access key ----------

  let afterKey = null;

  function askForKey(prompt, rejected) {
    keyForm.hidden = false;
    keyForm.querySelector('label').textContent = rejected
      ? 'That access key was not accepted. Enter the access key'
      : 'This server needs an access key';
    afterKey = prompt;
    keyInput.value = '';
    keyInput.focus();
  }

  keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = keyInput.value.trim();
    if (!value) return;
    accessKey = value;
    store.set('key', value);
    keyForm.hidden = true;
    const prompt = afterKey;
    afterKey = null;
    input.focus();
    if (prompt) send(prompt, { retry: true });
    else restore();
  });

  // ---------- sessions ----------

  function forgetSession() {
    session = null;
    store.remove('session');
  }

  function clearLog() {
    for (const node of [...log.children]) if (node !== welcome) node.remove();
    welcome.hidden = false;
  }

  async function restore() {
    if (!session) return;
    let res;
    try {
      res = await fetch(`${API}/sessions/${encodeURIComponent(session)}`, {
        headers: { Accept: 'application/json', ...authHeaders() },
        cache: 'no-store',
      });
    } catch (_) {
      noteBubble(`Could not reach ${API} to load the previous conversation.`);
      return;
    }
    if (res.status === 404 || res.status === 400) {
      forgetSession(); // expired or unknown: silently start fresh
      return;
    }
    if (res.status === 401) {
      askForKey(null, Boolean(accessKey));
      return;
    }
    if (!res.ok) return;
    let data;
    try { data = await res.json(); } catch (_) { return; }
    if (turn || !data || !Array.isArray(data.messages)) return;
    clearLog();
    renderHistory(data.messages);
    stick = true;
    log.scrollTop = log.scrollHeight;
  }

  function renderHistory(messages) {
    let bubble = null;
    for (const m of messages) {
      if (!m || typeof m !== 'object') continue;
      const content = typeof m.content === 'string' ? m.content : '';
      if (m.role === 'user') {
        bubble = null;
        userBubble(content);
      } else if (m.role === 'assistant') {
        if (!bubble) bubble = aiBubble();
        if (content) {
          if (!bubble.segment) {
            bubble.segment = { el: el('div', 'md'), text: '' };
            bubble.body.appendChild(bubble.segment.el);
          }
          bubble.segment.text += content;
          bubble.text += content;
          renderMarkdown(bubble.segment.el, bubble.segment.text);
        }
        for (const call of Array.isArray(m.tool_calls) ? m.tool_calls : []) {
          addChip(bubble, String(call.id), String(call.name || 'tool'));
        }
        if (m.status === 'interrupted') addMeta(bubble, 'Stopped', 'stopped');
        else if (m.status === 'failed') addMeta(bubble, 'Failed', 'stopped');
      } else if (m.role === 'tool' && bubble) {
        setChipResult(bubble, String(m.tool_call_id), String(m.name || 'tool'), true, content);
      }
    }
  }

  // ---------- wiring ----------

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const prompt = input.value;
    if (!prompt.trim() || turn) return;
    input.value = '';
    send(prompt);
  });

  stopBtn.addEventListener('click', stop);

  newBtn.addEventListener('click', () => {
    stop();
    forgetSession();
    clearLog();
    keyForm.hidden = true;
    input.value = '';
    input.focus();
    announce('New chat started');
  });

  for (const button of document.querySelectorAll('.suggestion')) {
    button.addEventListener('click', () => send(button.textContent));
  }

  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && turn) {
      event.preventDefault();
      stop();
    }
  });

  // Leaving the page mid-reply: close the stream so the browser does not hold it open.
  window.addEventListener('pagehide', () => { if (turn) turn.source.close(); });

  restore();
  input.focus();
})();
