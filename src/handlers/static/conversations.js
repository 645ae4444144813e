// This browser's conversations with this server: a list kept in localStorage (per API URL),
// shown as a side panel on wide screens and as a drawer under 700 px.
import { store } from './api.js';
import { el } from './render.js';

const MAX_KEPT = 50;
const TITLE_CHARS = 80;
const $ = (id) => document.getElementById(id);

function load() {
  try {
    const items = JSON.parse(store.get('conversations') || '[]');
    return Array.isArray(items)
      ? items.filter((c) => c && typeof c.id === 'string' && typeof c.title === 'string')
      : [];
  } catch (_) {
    return [];
  }
}

function when(ms) {
  const date = new Date(ms);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : date.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

export class ConversationList {
  /** `onOpen(id)` shows a conversation; `onDelete(id)` forgets it on the server. */
  constructor({ onOpen, onDelete }) {
    this.onOpen = onOpen;
    this.onDelete = onDelete;
    this.items = load();
    this.current = null;
    this.panel = $('conversations');
    this.list = $('conv-list');
    this.empty = $('conv-empty');
    this.toggle = $('toggle-conversations');
    this.closeBtn = $('close-conversations');
    this.scrim = $('scrim');
    this.narrow = window.matchMedia('(max-width: 699px)');
    this.toggle.addEventListener('click', () => (this.isOpen() ? this.close() : this.open()));
    this.closeBtn.addEventListener('click', () => this.close());
    this.scrim.addEventListener('click', () => this.close(false));
    this.narrow.addEventListener('change', () => this.close(false));
    // The drawer is not modal: moving focus elsewhere (Tab past its end) closes it.
    document.addEventListener('focusin', (event) => {
      if (this.isOpen() && !this.panel.contains(event.target) && event.target !== this.toggle) {
        this.close(false);
      }
    });
    this.render();
  }

  save() {
    store.set('conversations', JSON.stringify(this.items.slice(0, MAX_KEPT)));
  }

  /** A turn ran in `id`: add it (titled by its first prompt) or bring it to the top. */
  touch(id, prompt) {
    const found = this.items.find((c) => c.id === id);
    const title = found ? found.title : String(prompt).trim().replace(/\s+/g, ' ').slice(0, TITLE_CHARS);
    this.items = [{ id, title: title || 'Untitled', updated: Date.now() },
      ...this.items.filter((c) => c.id !== id)];
    this.current = id;
    this.save();
    this.render();
  }

  /** A conversation loaded from the server that this list does not know yet (kept elsewhere). */
  adopt(id, firstPrompt, updated) {
    if (this.items.some((c) => c.id === id)) return;
    const title = String(firstPrompt).trim().replace(/\s+/g, ' ').slice(0, TITLE_CHARS);
    this.items = [...this.items, { id, title: title || 'Untitled', updated }]
      .sort((a, b) => b.updated - a.updated);
    this.save();
    this.render();
  }

  remove(id) {
    this.items = this.items.filter((c) => c.id !== id);
    this.save();
    this.render();
  }

  setCurrent(id) {
    this.current = id;
    this.render();
  }

  render() {
    const rows = this.items.map((c) => {
      const row = el('li', 'conv');
      row.dataset.id = c.id;
      const open = el('button', 'conv-open');
      open.type = 'button';
      if (c.id === this.current) open.setAttribute('aria-current', 'true');
      const time = el('time', 'conv-time', when(c.updated));
      time.dateTime = new Date(c.updated).toISOString();
      open.append(el('span', 'conv-title', c.title), time);
      open.addEventListener('click', () => {
        this.close(false);
        this.onOpen(c.id);
      });
      const del = el('button', 'conv-delete', '×');
      del.type = 'button';
      del.setAttribute('aria-label', `Delete conversation: ${c.title}`);
      del.addEventListener('click', () => this.onDelete(c.id));
      row.append(open, del);
      return row;
    });
    this.list.replaceChildren(...rows);
    this.empty.hidden = rows.length > 0;
  }

  // ---------- the drawer (narrow screens) ----------

  isOpen() {
    return this.panel.classList.contains('open');
  }

  open() {
    this.panel.classList.add('open');
    this.scrim.hidden = false;
    this.toggle.setAttribute('aria-expanded', 'true');
    const first = this.list.querySelector('[aria-current]') || this.list.querySelector('button');
    (first || this.closeBtn).focus();
  }

  /** Close the drawer; focus goes back to its toggle unless something else takes it. */
  close(refocus = true) {
    if (!this.isOpen()) return;
    this.panel.classList.remove('open');
    this.scrim.hidden = true;
    this.toggle.setAttribute('aria-expanded', 'false');
    if (refocus) this.toggle.focus();
  }
}
