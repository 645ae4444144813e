// The one Server-Sent Events reader for live turns: fetch() plus a small parser.
//
// fetch() rather than EventSource: it sends the access key as a header, reads a refused
// request's JSON error, and never reconnects on its own (a reconnect to GET /chat would start a
// second turn).

/**
 * Open `url` as an event stream. Resolves to {response} once headers arrive (the caller checks
 * the status), or {response: null} if the server could not be reached or `signal` aborted.
 */
export async function openStream(url, { headers = {}, signal } = {}) {
  try {
    const response = await fetch(url, {
      headers: { Accept: 'text/event-stream', ...headers },
      signal,
      cache: 'no-store',
    });
    return { response };
  } catch (_) {
    return { response: null };
  }
}

export function isEventStream(response) {
  return (response.headers.get('Content-Type') || '').startsWith('text/event-stream');
}

/**
 * Feed each JSON object of an SSE body to `onEvent(message, id)` until the body ends.
 * Resolves true if the body ended cleanly, false if it broke off (or was aborted).
 * Events that are not JSON objects are skipped: clients ignore what they do not know.
 */
export async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data = [];
  let id = null;
  const dispatch = () => {
    if (data.length) {
      let message = null;
      try { message = JSON.parse(data.join('\n')); } catch (_) { message = null; }
      if (message && typeof message === 'object' && onEvent(message, id) === false) return false;
    }
    data = [];
    return true;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[end] === '\r' && end === buffer.length - 1) break; // maybe half of \r\n
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
        if (line === '') {
          if (!dispatch()) { reader.cancel().catch(() => {}); return true; }
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value_ = colon < 0 ? '' : line.slice(colon + 1);
        if (value_.startsWith(' ')) value_ = value_.slice(1);
        if (field === 'data') data.push(value_);
        else if (field === 'id' && !value_.includes('\0')) id = value_;
      }
    }
    return true;
  } catch (_) {
    return false;
  }
}
