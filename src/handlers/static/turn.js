// One turn at a time: send a prompt, stream its events into a Reply, finish, stop, recover.
//
// Protocol (DESIGN §4): GET {api}/chat?prompt=..&session=.. answers an event stream of JSON
// messages: started, token, tool_call, tool_result, error, done. The stream is closed on done
// and on error, and nothing reconnects on its own (that would start a second turn).
import { API, auth, chatUrl, fetchSession, stopSession, store, streamUrl } from './api.js';
import { isEventStream, openStream, readEvents } from './stream.js';
import {
  Reply, announce, clearLog, errorBubble, followLatest, noteBubble, renderHistory, userBubble,
} from './render.js';

const $ = (id) => document.getElementById(id);
const input = $('prompt');
const sendBtn = $('send');
const stopBtn = $('stop');
const keyForm = $('key-form');
const keyInput = $('key-input');

/** Hooks main.js sets: a turn started or ended in a session; the model was named. */
export const events = {
  onSession: (_id, _prompt) => {},
  onModel: (_model, _simulated) => {},
  onMissing: (_id) => {},
  onHistory: (_id, _messages) => {},
};

let session = store.get('session');
let turn = null; // the reply being streamed

export const currentSession = () => session;
export const busy = () => Boolean(turn);

function setSession(id) {
  session = id;
  if (id) store.set('session', id);
  else store.remove('session');
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

function retryable(prompt) {
  return (node) => {
    if (turn) return;
    node.remove();
    send(prompt, { retry: true });
  };
}

export function send(prompt, { retry = false, renewed = false } = {}) {
  if (turn || !prompt.trim()) return;
  if (!retry) userBubble(prompt);
  followLatest();
  const reply = new Reply();
  reply.setThinking(true);
  turn = {
    prompt,
    reply,
    renewed,
    controller: new AbortController(),
    session: null, // named by `started`
    lastId: null, // the id of the last event seen: where a dropped stream resumes
    stopPending: false, // stopped before `started` named the session: stop it when it does
    startedAt: performance.now(),
    firstTokenAt: null,
  };
  setStreaming(true);
  run(turn);
}

/** Feed an event stream into the current turn; false once the turn is over or replaced. */
async function follow(current, body) {
  await readEvents(body, (message, id) => {
    if (current.stopPending) {
      stopStarted(current, message);
      return false;
    }
    if (turn !== current) return false;
    if (id) current.lastId = id;
    handle(current, message);
    return turn === current;
  });
  return turn === current;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/**
 * The stream dropped before the turn ended. The turn runs on on the server and keeps its
 * events, so read on from the last event seen (same ids: nothing twice, nothing missing),
 * backing off 1, 2, 4, 8 s between tries; say so meanwhile.
 */
async function resume(current) {
  const { reply } = current;
  for (let attempt = 0; attempt < 6 && turn === current; attempt += 1) {
    if (!current.session || !current.lastId) break;
    reply.setReconnecting(true);
    announce('Connection lost; reconnecting');
    await sleep(Math.min(1000 * 2 ** Math.max(attempt - 1, 0), 8000));
    if (turn !== current) return;
    const { response } = await openStream(streamUrl(current.session, current.lastId), {
      headers: auth.headers(), signal: current.controller.signal,
    });
    if (turn !== current) return;
    if (!response) continue;
    if (response.status === 204 || response.status === 404) break; // nothing more to read
    if (!response.ok || !isEventStream(response)) continue;
    reply.setReconnecting(false);
    attempt = -1; // reached it: a later drop starts its backoff over
    if (!(await follow(current, response.body))) return;
  }
  if (turn !== current) return;
  reply.setReconnecting(false);
  finish(current, 'failed');
  errorBubble('The connection was lost before the reply finished.', retryable(current.prompt));
}

/** Follow the session's running turn, e.g. after a reload in the middle of a reply. */
function join(id, prompt) {
  if (turn) return;
  const reply = new Reply();
  reply.setThinking(true);
  turn = {
    prompt,
    reply,
    renewed: false,
    controller: new AbortController(),
    session: id,
    lastId: null,
    stopPending: false,
    startedAt: performance.now(),
    firstTokenAt: null,
  };
  setStreaming(true);
  const current = turn;
  (async () => {
    const { response } = await openStream(streamUrl(id), {
      headers: auth.headers(), signal: current.controller.signal,
    });
    if (turn !== current) return;
    if (response && response.ok && isEventStream(response)) {
      if (!(await follow(current, response.body))) return;
      await resume(current);
      return;
    }
    // Ended meanwhile (204) or gone: what is stored is the whole story.
    turn = null;
    reply.remove();
    setStreaming(false);
    if (response && response.status === 204) restore(id);
  })();
}

async function run(current) {
  const url = chatUrl(current.prompt, session);
  const options = { headers: auth.headers(), signal: current.controller.signal };
  let { response } = await openStream(url, options);
  if (current.stopPending) {
    await stopWhenStarted(current, response);
    return;
  }
  if (turn !== current) return; // stopped meanwhile
  if (!response) {
    // One more attempt: a passing network failure should not cost the user the turn.
    ({ response } = await openStream(url, options));
    if (current.stopPending) {
      await stopWhenStarted(current, response);
      return;
    }
    if (turn !== current) return;
  }
  if (!response) {
    finish(current, 'failed');
    errorBubble(`Cannot reach the server at ${API}. Check the connection and try again.`,
      retryable(current.prompt));
    return;
  }
  if (response.ok && isEventStream(response)) {
    if (await follow(current, response.body)) await resume(current);
    return;
  }
  await refused(current, response);
}

/**
 * Stop was pressed before the server named the turn's session: the turn runs on without a
 * reader, so read on until `started` says which session to stop, then stop it.
 */
async function stopWhenStarted(current, response) {
  if (response && response.ok && isEventStream(response)) {
    await readEvents(response.body, (message) => {
      stopStarted(current, message);
      return false;
    });
  }
  current.controller.abort();
}

function stopStarted(current, message) {
  current.controller.abort();
  if (message.lifecycle !== 'started' || typeof message.session !== 'string') return;
  stopSession(message.session);
  // Keep the conversation: it holds this prompt now.
  if (!turn && !session) setSession(message.session);
  events.onSession(message.session, current.prompt);
}

/** The server refused the turn before streaming: say why, in its own words. */
async function refused(current, res) {
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (turn !== current) return;
  const message = body && typeof body.error === 'string' ? body.error : '';
  finish(current, 'failed');
  const retry = retryable(current.prompt);
  if (res.status === 401) {
    askForKey(current.prompt, auth.present);
  } else if (res.status === 404 && session && !current.renewed) {
    // The session expired on the server: start a new conversation with the same prompt.
    events.onMissing(session);
    setSession(null);
    noteBubble('The previous conversation has expired; starting a new one.');
    send(current.prompt, { retry: true, renewed: true });
  } else if (res.status === 429) {
    const wait = res.headers.get('Retry-After');
    errorBubble(`${message || 'Too many requests.'}${wait ? ` Try again in ${wait} s.` : ''}`, retry);
  } else if (res.status === 409) {
    errorBubble(message || 'Another reply is still running in this conversation.', retry);
  } else if (res.status === 413 || res.status === 400 || res.status === 422) {
    errorBubble(message || `The server refused the message (HTTP ${res.status}).`, null);
  } else if (!res.ok) {
    errorBubble(message || `The server answered HTTP ${res.status}.`, retry);
  } else {
    errorBubble('The connection failed. Please try again.', retry);
  }
}

function handle(current, msg) {
  const { reply } = current;
  if (msg.lifecycle === 'started') {
    if (typeof msg.session === 'string' && msg.session) {
      current.session = msg.session;
      setSession(msg.session);
      events.onSession(msg.session, current.prompt);
    }
    if (typeof msg.model === 'string') events.onModel(msg.model, msg.simulated === true);
  } else if (typeof msg.reasoning === 'string') {
    reply.appendReasoning(msg.reasoning, { live: true });
  } else if (typeof msg.token === 'string') {
    if (current.firstTokenAt === null && msg.token) current.firstTokenAt = performance.now();
    reply.appendText(msg.token);
  } else if (msg.tool_call && typeof msg.tool_call === 'object') {
    reply.addChip(String(msg.tool_call.id), String(msg.tool_call.name || 'tool'));
  } else if (msg.tool_result && typeof msg.tool_result === 'object') {
    const r = msg.tool_result;
    reply.setChipResult(String(r.id), String(r.name || 'tool'), r.ok !== false, r.output);
    reply.setThinking(true); // the model continues with the result
  } else if (typeof msg.error === 'string') {
    finish(current, 'failed');
    errorBubble(`Something went wrong: ${msg.error}`, retryable(current.prompt));
  } else if (msg.lifecycle === 'done') {
    finish(current, 'done', msg);
  }
}

const seconds = (ms) => `${(ms / 1000).toFixed(1)} s`;

function finish(current, how, done) {
  if (turn !== current) return;
  if (how === 'stopped' && !current.session) current.stopPending = true;
  else current.controller.abort();
  turn = null;
  const { reply } = current;
  reply.setThinking(false);
  reply.finish();
  if (how === 'done') {
    const parts = [];
    const usage = done && done.usage;
    if (usage && Number.isFinite(usage.completion_tokens)) {
      parts.push(`${usage.completion_tokens} tokens`);
    }
    parts.push(seconds(performance.now() - current.startedAt));
    if (current.firstTokenAt !== null) {
      parts.push(`first token ${seconds(current.firstTokenAt - current.startedAt)}`);
    }
    if (done && done.finish_reason === 'length') parts.push('cut off at the token limit');
    reply.addMeta(parts.join(' · '));
    if (session) events.onSession(session, current.prompt);
  } else if (how === 'stopped') {
    reply.node.classList.add('stopped');
    reply.addMeta(reply.text ? 'Stopped' : 'Stopped before the first token', 'stopped');
    announce('Reply stopped');
  } else if (how === 'failed' && !reply.text && !reply.chips.size) {
    reply.remove();
  }
  setStreaming(false);
}

/**
 * Stop the reply: ask the server to end the turn (it runs on without readers otherwise; the
 * reply so far is stored as interrupted), and close the stream so no more text arrives.
 */
export function stop() {
  if (!turn) return;
  if (turn.session) stopSession(turn.session);
  finish(turn, 'stopped');
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

export function hideKeyForm() {
  keyForm.hidden = true;
}

keyForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const value = keyInput.value.trim();
  if (!value) return;
  auth.set(value);
  keyForm.hidden = true;
  const prompt = afterKey;
  afterKey = null;
  input.focus();
  if (prompt) send(prompt, { retry: true });
  else restore();
});

/** Whether a 401 from another request (history, delete) should open the key form. */
export function needKey() {
  askForKey(null, auth.present);
}

// ---------- sessions ----------

/** Start over: the current conversation stays on the server (and in the list). */
export function newChat() {
  stop();
  setSession(null);
  clearLog();
}

/** Show conversation `id` (the current one by default) from GET /sessions/{id}. */
export async function restore(id = session) {
  if (!id) return;
  if (id !== session) {
    stop();
    setSession(id);
    clearLog();
  }
  const res = await fetchSession(id);
  if (id !== session) return; // switched again meanwhile
  if (!res) {
    noteBubble(`Could not reach ${API} to load the conversation.`);
    return;
  }
  if (res.status === 404 || res.status === 400) {
    // Expired or unknown: forget it and start fresh.
    setSession(null);
    events.onMissing(id);
    clearLog();
    return;
  }
  if (res.status === 401) {
    askForKey(null, auth.present);
    return;
  }
  if (!res.ok) return;
  let data;
  try { data = await res.json(); } catch (_) { return; }
  if (turn || id !== session || !data || !Array.isArray(data.messages)) return;
  clearLog();
  renderHistory(data.messages);
  followLatest();
  events.onHistory(id, data.messages);
  if (typeof data.running_turn === 'string' && data.running_turn) {
    // A reply is still being written (the page was reloaded mid-reply): rejoin it.
    const users = data.messages.filter((m) => m && m.role === 'user');
    join(id, users.length ? String(users[users.length - 1].content || '') : '');
  }
}

// Leaving the page mid-reply: close the stream so the browser does not hold it open.
window.addEventListener('pagehide', () => { if (turn) turn.controller.abort(); });
