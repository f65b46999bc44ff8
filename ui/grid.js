// The cluster view's tile grid: every node a tile, in sections (a rack and
// chassis parsed from the xname, or a group), virtualised: only the rows
// of tiles in or near the viewport exist in the DOM, so 10,000 nodes cost
// a few hundred elements.

import { h } from './views.js';

export const STEPS = ['dhcp', 'tftp', 'script', 'kernel', 'initrd', 'meta-data', 'phone-home'];
const TILE_W = 92; // px, tile width plus gap
const ROW_H = 30; // px, a row of tiles
const HEAD_H = 30; // px, a section heading
const OVERSCAN = 6; // rows drawn above and below the viewport

const XNAME = /^(x\d+)(c\d+)?(.*)$/;

// "x1000c0s3b0n1" → ["x1000c0", "s3b0n1"]
export function rackOf(xname) {
  const m = XNAME.exec(xname);
  if (!m) return ['(other)', xname];
  return [m[1] + (m[2] || ''), m[3] || xname];
}

export function powerClass(state) {
  switch ((state || '').toLowerCase()) {
    case 'on':
    case 'ready':
      return 'p-on';
    case 'off':
      return 'p-off';
    case 'standby':
    case 'halt':
      return 'p-standby';
    default:
      return 'p-unknown';
  }
}

// One lower-case string per node that the filter's words are looked for in.
export function searchText(n) {
  return [n.xname, n.nid ?? '', n.state, n.role || '', n.step || 'no-boot', ...(n.groups || []),
    ...(n.macs || []), ...(n.ips || []), n.enabled === false ? 'disabled' : '']
    .join(' ')
    .toLowerCase();
}

export function matches(text, words) {
  for (const w of words) if (!text.includes(w)) return false;
  return true;
}

// Sections of nodes: [{title, nodes}] in title order.
export function sections(nodes, by) {
  const m = new Map();
  const add = (k, n) => {
    let s = m.get(k);
    if (!s) m.set(k, (s = []));
    s.push(n);
  };
  for (const n of nodes) {
    if (by === 'group') {
      if (!n.groups || n.groups.length === 0) add('(no group)', n);
      else for (const g of n.groups) add(g, n);
    } else if (by === 'rack') {
      add(rackOf(n.xname)[0], n);
    } else {
      add('all nodes', n);
    }
  }
  const natural = new Intl.Collator('en', { numeric: true });
  return [...m.keys()].sort(natural.compare).map((title) => ({ title, nodes: m.get(title) }));
}

export class Grid {
  constructor(scroller, onOpen) {
    this.scroller = scroller;
    this.onOpen = onOpen;
    this.inner = h('div', { class: 'grid-inner', id: 'grid', role: 'list' });
    scroller.append(this.inner);
    this.rows = [];
    this.colour = 'power';
    this.drawn = new Map();
    this.frame = 0;
    scroller.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.inner.addEventListener('keydown', (ev) => this.arrow(ev));
    this.resize = new ResizeObserver(() => this.layout());
    this.resize.observe(scroller);
  }

  destroy() {
    this.resize.disconnect();
  }

  // secs: [{title, nodes}]
  set(secs, colour) {
    this.secs = secs;
    this.colour = colour;
    this.layout();
  }

  layout() {
    if (!this.secs) return;
    const width = Math.max(this.scroller.clientWidth - 16, TILE_W);
    const per = Math.max(1, Math.floor(width / TILE_W));
    const rows = [];
    let y = 0;
    let shown = 0;
    for (const s of this.secs) {
      rows.push({ y, head: s, h: HEAD_H });
      y += HEAD_H;
      for (let i = 0; i < s.nodes.length; i += per) {
        rows.push({ y, tiles: s.nodes.slice(i, i + per), h: ROW_H });
        y += ROW_H;
      }
      shown += s.nodes.length;
    }
    this.rows = rows;
    this.inner.style.height = `${y}px`;
    this.inner.dataset.tiles = String(shown);
    // New data or a new width: every row is drawn again; the focused tile
    // keeps the focus if it is still drawn.
    const focused = document.activeElement && this.inner.contains(document.activeElement)
      ? document.activeElement.dataset.xname : null;
    for (const el of this.drawn.values()) el.remove();
    this.drawn.clear();
    this.draw();
    if (focused) {
      const again = this.inner.querySelector(`a.tile[data-xname="${CSS.escape(focused)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  // First row whose bottom is below y (rows are sorted by y).
  find(y) {
    let lo = 0;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const r = this.rows[mid];
      if (r.y + r.h <= y) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  draw() {
    const top = this.scroller.scrollTop;
    const bottom = top + this.scroller.clientHeight;
    const first = Math.max(0, this.find(top) - OVERSCAN);
    const last = Math.min(this.rows.length, this.find(bottom) + OVERSCAN + 1);
    const keep = new Set();
    for (let i = first; i < last; i++) {
      keep.add(i);
      if (!this.drawn.has(i)) {
        const el = this.row(this.rows[i]);
        this.drawn.set(i, el);
        this.inner.append(el);
      }
    }
    for (const [i, el] of this.drawn) {
      if (!keep.has(i) && !el.contains(document.activeElement)) {
        el.remove();
        this.drawn.delete(i);
      }
    }
    this.inner.dataset.drawnRows = String(this.drawn.size);
  }

  // Arrow keys move the focus between tiles: left/right along the rows,
  // up/down to the same place in the row above or below.
  arrow(ev) {
    const t = ev.target;
    if (!(t instanceof HTMLElement) || !t.classList.contains('tile')) return;
    const row = t.parentElement;
    let next = null;
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') {
      const forward = ev.key === 'ArrowRight';
      const tiles = [...this.inner.querySelectorAll('a.tile')];
      tiles.sort((a, b) => this.y(a) - this.y(b) || (a.compareDocumentPosition(b) & 4 ? -1 : 1));
      next = tiles[tiles.indexOf(t) + (forward ? 1 : -1)];
    } else if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      const i = [...row.children].indexOf(t);
      const rows = [...this.inner.querySelectorAll('.trow')].sort((a, b) => this.y(a) - this.y(b));
      const at = rows.indexOf(row) + (ev.key === 'ArrowDown' ? 1 : -1);
      const other = rows[at];
      if (other) next = other.children[Math.min(i, other.children.length - 1)];
    } else {
      return;
    }
    ev.preventDefault();
    if (next) next.focus();
  }

  y(el) {
    const row = el.classList.contains('trow') ? el : el.parentElement;
    return Number(row.dataset.y || 0);
  }

  row(r) {
    let el;
    if (r.head) {
      el = h('div', { class: 'sec', role: 'heading', 'aria-level': '2' },
        h('span', {}, r.head.title), h('span', { class: 'count' }, ` ${r.head.nodes.length} nodes`));
    } else {
      el = h('div', { class: 'trow', role: 'presentation' }, ...r.tiles.map((n) => this.tile(n)));
    }
    el.style.transform = `translateY(${r.y}px)`;
    el.dataset.y = String(r.y);
    return el;
  }

  tile(n) {
    const step = n.step || 'none';
    const cls = ['tile', powerClass(n.state), `s-${step}`, this.colour === 'step' ? 'by-step' : 'by-power'];
    if (n.enabled === false) cls.push('disabled');
    const title = `${n.xname} · ${n.state || 'unknown'} · boot step: ${n.step || 'none'}` +
      (n.ips && n.ips.length ? ` · ${n.ips.join(', ')}` : '');
    const a = h('a', { class: cls.join(' '), href: `#/node/${n.xname}`, title, role: 'listitem',
      'data-xname': n.xname }, rackOf(n.xname)[1]);
    return a;
  }
}
