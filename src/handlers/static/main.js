// SSE Chat page: wiring. ES modules, no build step, no inline handlers (script-src 'self').
//
// api.js       server URL, access key, per-server storage, JSON endpoints
// stream.js    the SSE reader for live turns
// markdown.js  Markdown -> sanitized DOM (marked, DOMPurify, highlight.js), incremental
// render.js    the conversation log's bubbles, for live replies and history alike
// turn.js      one turn: send, stream, finish, stop, errors, the access key, history
// conversations.js  this browser's conversations list (side panel / drawer)
import { deleteSession, health } from './api.js';
import * as turn from './turn.js';
import { ConversationList } from './conversations.js';
import { announce } from './render.js';

const $ = (id) => document.getElementById(id);
const input = $('prompt');
const badge = $('model');

function showModel(model, simulated) {
  if (!model) return;
  badge.textContent = simulated ? 'simulator' : model;
  badge.classList.toggle('sim', simulated);
  badge.title = simulated
    ? `Replies come from the built-in simulator (${model}): no OpenAI key is configured`
    : `Model: ${model}`;
  badge.hidden = false;
}

async function remove(id) {
  const status = await deleteSession(id);
  if (status === 401) {
    turn.needKey();
    return;
  }
  if (status !== 204 && status !== 404 && !(status >= 200 && status < 300)) {
    announce(status ? `Could not delete the conversation (HTTP ${status})` : 'The server cannot be reached');
    return;
  }
  conversations.remove(id);
  if (id === turn.currentSession()) {
    turn.newChat();
    conversations.setCurrent(null);
  }
  announce('Conversation deleted');
  input.focus();
}

const conversations = new ConversationList({
  onOpen: (id) => {
    conversations.setCurrent(id);
    turn.restore(id);
    input.focus();
  },
  onDelete: remove,
});

turn.events.onSession = (id, prompt) => conversations.touch(id, prompt);
turn.events.onModel = showModel;
turn.events.onHistory = (id, messages) => {
  const first = messages.find((m) => m && m.role === 'user');
  const last = messages[messages.length - 1];
  // created_at is epoch seconds.
  const updated = last && Number.isFinite(last.created_at) ? last.created_at * 1000 : Date.now();
  if (first) conversations.adopt(id, first.content, updated);
};
turn.events.onMissing = (id) => {
  conversations.remove(id);
  if (!turn.currentSession()) conversations.setCurrent(null);
};

$('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const prompt = input.value;
  if (!prompt.trim() || turn.busy()) return;
  input.value = '';
  turn.send(prompt);
});

$('stop').addEventListener('click', turn.stop);

$('new-chat').addEventListener('click', () => {
  turn.newChat();
  conversations.setCurrent(null);
  turn.hideKeyForm();
  input.value = '';
  input.focus();
  announce('New chat started');
});

for (const button of document.querySelectorAll('.suggestion')) {
  button.addEventListener('click', () => turn.send(button.textContent));
}

document.addEventListener('keydown', (event) => {
  if (event.key !== 'Escape') return;
  if (conversations.isOpen()) {
    event.preventDefault();
    conversations.close();
  } else if (turn.busy()) {
    event.preventDefault();
    turn.stop();
  }
});

health().then((info) => {
  if (info && typeof info.model === 'string' && badge.hidden) {
    showModel(info.model, info.simulated === true);
  }
});

conversations.setCurrent(turn.currentSession());
turn.restore();
input.focus();
document.documentElement.classList.add('ready');
