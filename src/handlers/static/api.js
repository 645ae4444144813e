// Where the server is, how to authenticate to it, and this browser's storage for it.
//
// Storage is namespaced per API URL so a page pointed at another server never sends it this
// server's key or sessions; localStorage can throw (private modes), which only costs memory.

const params = new URLSearchParams(location.search);

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

export const API = resolveApi(params.get('api'));
export const ROLE = params.get('role') || '';

export const store = {
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

let accessKey = store.get('key');

export const auth = {
  get present() { return Boolean(accessKey); },
  set(value) {
    accessKey = value;
    store.set('key', value);
  },
  headers() {
    return accessKey ? { Authorization: `Bearer ${accessKey}` } : {};
  },
};

/** The URL of one turn's stream (GET /chat); the key travels in a header, never in the URL. */
export function chatUrl(prompt, session) {
  const url = new URL(`${API}/chat`);
  url.searchParams.set('prompt', prompt);
  if (session) url.searchParams.set('session', session);
  if (ROLE) url.searchParams.set('role', ROLE);
  return url.href;
}

function sessionUrl(id) {
  return `${API}/sessions/${encodeURIComponent(id)}`;
}

/** GET /sessions/{id}/stream: join the session's running (or last) turn, after an event id. */
export function streamUrl(id, after) {
  const url = new URL(`${sessionUrl(id)}/stream`);
  if (after) url.searchParams.set('after', after);
  return url.href;
}

/** GET /sessions/{id}: the Response (callers decide on 401/404), or null if unreachable. */
export async function fetchSession(id) {
  try {
    return await fetch(sessionUrl(id), {
      headers: { Accept: 'application/json', ...auth.headers() },
      cache: 'no-store',
    });
  } catch (_) {
    return null;
  }
}

/** DELETE /sessions/{id}: the status, or 0 if the server could not be reached. */
export async function deleteSession(id) {
  try {
    const res = await fetch(sessionUrl(id), { method: 'DELETE', headers: auth.headers() });
    return res.status;
  } catch (_) {
    return 0;
  }
}

/** POST /sessions/{id}/stop: ask the server to end the session's running turn (best effort). */
export async function stopSession(id) {
  try {
    await fetch(`${sessionUrl(id)}/stop`, { method: 'POST', headers: auth.headers() });
  } catch (_) { /* the stream is closed anyway */ }
}

/** GET /healthz as JSON, or null. */
export async function health() {
  try {
    const res = await fetch(`${API}/healthz`, { cache: 'no-store' });
    return res.ok ? await res.json() : null;
  } catch (_) {
    return null;
  }
}
