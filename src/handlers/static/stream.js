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
 * Feed each JSON object of an SSE body to `onEvent(message, id)` until the body ends or
 * `onEvent` returns false (the turn is over). Events that are not JSON objects are skipped:
 * clients ignore what they do not know. Resolves when reading stops, for whatever reason
 * (the caller knows whether its turn finished).
 */
export async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let data = [];
  let id = null;
  /** End of one event (a blank line); false when the reader wants no more. */
  const dispatch = () => {
    const lines = data;
    data = [];
    if (!lines.length) return true;
    let message = null;
    try { message = JSON.parse(lines.join('\n')); } catch (_) { return true; }
    return !(message && typeof message === 'object') || onEvent(message, id) !== false;
  };
  try {
    for (;;) {
      const { value: chunk, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[end] === '\r' && end === buffer.length - 1) break; // maybe half of \r\n
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
        if (line === '') {
          if (!dispatch()) {
            reader.cancel().catch(() => {});
            return;
          }
        } else if (!line.startsWith(':')) { // a comment (": ping") otherwise
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'data') data.push(value);
          else if (field === 'id' && !value.includes('\0')) id = value;
        }
      }
    }
  } catch (_) {
    // aborted (Stop, a finished turn) or the connection dropped: the caller decides
  }
}
