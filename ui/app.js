// The status page: sign-in, a hash router (#/, #/node/X, #/discovery,
// #/dhcp), and the live event stream that tells the current page to fetch
// its data again.

import * as api from './api.js';
import { Grid, sections, searchText, matches } from './grid.js';
import { h, nodePage, discoveryPage, dhcpPage } from './views.js';

const $ = (id) => document.getElementById(id);
// x1000c0s2 before x1000c0s10.
const NATURAL = new Intl.Collator('en', { numeric: true });

// A blocked script, style or connection is a bug of this page: say so
// where a test (or an operator's console) sees it.
document.addEventListener('securitypolicyviolation', (e) => {
  const n = Number(document.documentElement.dataset.cspViolations || 0) + 1;
  document.documentElement.dataset.cspViolations = String(n);
  console.error(`Content Security Policy violation: ${e.violatedDirective} ${e.blockedURI}`);
});

const state = {
  session: null,
  nodes: [], // rows of /ui/api/cluster, each with .text for the filter
  generation: -1,
  filter: '',
  group: 'rack',
  colour: 'power',
  grid: null,
  events: null,
  refreshing: false,
  again: false,
  firstRender: true,
};

// ------------------------------------------------------------- sign-in

async function start() {
  $('sign-in').addEventListener('submit', onSignIn);
  $('sign-out').addEventListener('click', onSignOut);
  window.addEventListener('hashchange', route);
  document.addEventListener('keydown', onKey);
  try {
    signedIn(await api.session());
  } catch (e) {
    showSignIn(e.status === 401 ? '' : e.message);
  }
}

function showSignIn(message) {
  state.session = null;
  if (state.events) state.events.close();
  state.events = null;
  $('view').hidden = true;
  $('nav').hidden = true;
  $('live').hidden = true;
  $('sign-out').hidden = true;
  $('who').textContent = '';
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('token').focus();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const token = $('token').value.trim();
  try {
    const s = await api.signIn(token);
    $('token').value = '';
    signedIn(s);
  } catch (e) {
    $('sign-in-error').textContent = `Sign-in failed: ${e.message}`;
  }
}

async function onSignOut() {
  try {
    await api.signOut();
  } catch (_) {
    /* signed out either way */
  }
  state.nodes = [];
  state.generation = -1;
  showSignIn('Signed out.');
}

function signedIn(s) {
  state.session = s;
  $('sign-in').hidden = true;
  $('view').hidden = false;
  $('nav').hidden = false;
  $('sign-out').hidden = false;
  $('who').textContent = `${s.sub}${s.write ? '' : ' (read-only)'}`;
  document.body.dataset.write = String(s.write);
  listen();
  route();
}

// ---------------------------------------------------------- live events

function listen() {
  if (state.events) state.events.close();
  const es = new EventSource('/ui/api/events');
  state.events = es;
  es.addEventListener('open', () => ($('live').hidden = false));
  es.addEventListener('error', () => ($('live').hidden = true));
  es.addEventListener('changed', (ev) => {
    let msg = {};
    try {
      msg = JSON.parse(ev.data);
    } catch (_) {
      /* refresh anyway */
    }
    document.body.dataset.events = String(Number(document.body.dataset.events || 0) + 1);
    refresh(msg);
  });
}

// One fetch at a time; a change during a fetch fetches once more after it.
async function refresh() {
  if (state.refreshing) {
    state.again = true;
    return;
  }
  state.refreshing = true;
  try {
    await current.refresh();
  } catch (e) {
    if (e.status === 401) return showSignIn('The session has ended: sign in again.');
  } finally {
    state.refreshing = false;
  }
  if (state.again) {
    state.again = false;
    refresh();
  }
}

// --------------------------------------------------------------- router

let current = { refresh: async () => {}, leave: () => {} };

function route() {
  if (!state.session) return;
  current.leave();
  const hash = location.hash || '#/';
  const view = $('view');
  view.replaceChildren();
  for (const a of document.querySelectorAll('#nav a')) a.removeAttribute('aria-current');
  let m;
  if ((m = /^#\/node\/(.+)$/.exec(hash))) current = nodeView(view, decodeURIComponent(m[1]));
  else if (hash === '#/discovery') current = simpleView(view, 'nav-discovery', api.discovery, discoveryPage);
  else if (hash === '#/dhcp') current = simpleView(view, 'nav-dhcp', api.dhcp, dhcpPage);
  else current = clusterView(view);
  refresh();
}

function onKey(ev) {
  const t = ev.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement;
  if (ev.key === '/' && !typing && $('filter')) {
    ev.preventDefault();
    $('filter').focus();
  } else if (ev.key === 'Escape' && t === $('filter')) {
    $('filter').value = '';
    state.filter = '';
    current.redraw && current.redraw();
  }
}

// --------------------------------------------------------- cluster view

function clusterView(view) {
  $('nav-cluster').setAttribute('aria-current', 'page');
  const summary = h('p', { class: 'summary', id: 'summary', 'aria-live': 'polite' });
  const filter = h('input', {
    id: 'filter', type: 'search', placeholder: 'Filter: xname, MAC, IP, group, state, step   ( / )',
    value: state.filter, 'aria-label': 'Filter nodes', autocomplete: 'off', spellcheck: 'false',
  });
  const group = h('select', { id: 'group-by', 'aria-label': 'Group by' },
    h('option', { value: 'rack' }, 'by rack/chassis'), h('option', { value: 'group' }, 'by group'),
    h('option', { value: 'none' }, 'no grouping'));
  group.value = state.group;
  const colour = h('select', { id: 'colour-by', 'aria-label': 'Colour by' },
    h('option', { value: 'power' }, 'colour: power'), h('option', { value: 'step' }, 'colour: boot step'));
  colour.value = state.colour;
  const legend = h('div', { class: 'legend', id: 'legend' });
  const scroller = h('div', { class: 'grid-scroll', id: 'grid-scroll' });
  view.append(h('div', { class: 'toolbar' }, filter, group, colour, summary), legend, scroller);
  const grid = new Grid(scroller);
  state.grid = grid;
  let timer = 0;
  filter.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.filter = filter.value;
      redraw();
    }, 80);
  });
  filter.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      const first = scroller.querySelector('a.tile');
      if (first) first.focus();
    }
  });
  group.addEventListener('change', () => {
    state.group = group.value;
    redraw();
  });
  colour.addEventListener('change', () => {
    state.colour = colour.value;
    drawLegend();
    redraw();
  });
  function drawLegend() {
    const items = state.colour === 'power'
      ? [['p-on', 'on'], ['p-off', 'off'], ['p-standby', 'standby'], ['p-unknown', 'other']]
      : [['s-none', 'no boot'], ['s-dhcp', 'dhcp'], ['s-tftp', 'tftp'], ['s-script', 'script'], ['s-kernel', 'kernel'],
        ['s-initrd', 'initrd'], ['s-meta-data', 'meta-data'], ['s-phone-home', 'phone-home']];
    const cls = state.colour === 'power' ? 'by-power' : 'by-step';
    legend.replaceChildren(...items.map(([c, t]) => h('span', { class: `key tile ${cls} ${c}` }, t)));
  }
  drawLegend();

  function redraw() {
    const words = state.filter.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = words.length ? state.nodes.filter((n) => matches(n.text, words)) : state.nodes;
    grid.set(sections(shown, state.group), state.colour);
    const counts = {};
    for (const n of shown) counts[n.state || 'unknown'] = (counts[n.state || 'unknown'] || 0) + 1;
    summary.textContent = `${shown.length} of ${state.nodes.length} nodes · ` +
      Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(' · ');
    scroller.dataset.total = String(state.nodes.length);
    scroller.dataset.shown = String(shown.length);
    scroller.dataset.generation = String(state.generation);
    if (state.firstRender && state.nodes.length) {
      state.firstRender = false;
      performance.mark('tiles-rendered');
      document.body.dataset.renderedMs = String(Math.round(performance.now()));
    }
  }

  return {
    redraw,
    async refresh() {
      const c = await api.cluster();
      for (const n of c.nodes) n.text = searchText(n);
      c.nodes.sort((a, b) => NATURAL.compare(a.xname, b.xname));
      state.nodes = c.nodes;
      state.generation = c.generation;
      redraw();
    },
    leave() {
      grid.destroy();
      state.grid = null;
    },
  };
}

// ------------------------------------------------------------ node view

function nodeView(view, xname) {
  const consoleTail = async (pre) => {
    try {
      pre.textContent = (await api.consoleTail(xname, 200)) || '(empty)';
    } catch (e) {
      pre.textContent = `console unavailable: ${e.message}`;
    }
  };
  const actions = {
    console: consoleTail,
    power: async (op) => {
      const words = { on: 'Power on', off: 'Power off', restart: 'Restart' };
      if (!(await confirmDialog(`${words[op]} ${xname}?`))) return;
      try {
        const t = await api.power(op, [xname]);
        status(`${words[op]} requested (transition ${t.transitionID.slice(0, 8)}).`);
      } catch (e) {
        status(`${words[op]} failed: ${e.message}`);
      }
    },
  };
  const note = h('p', { class: 'status noprint', id: 'status', role: 'status' });
  const body = h('div', {});
  view.append(h('p', { class: 'noprint' }, h('a', { href: '#/' }, '← cluster')), note, body);
  function status(t) {
    note.textContent = t;
  }
  return {
    async refresh() {
      try {
        const v = await api.node(xname);
        const focused = document.activeElement && document.activeElement.id;
        body.replaceChildren(nodePage(v, state.session.write, actions));
        if (focused && $(focused)) $(focused).focus();
      } catch (e) {
        if (e.status === 401) throw e;
        body.replaceChildren(h('p', { class: 'error' }, `${xname}: ${e.message}`));
      }
    },
    leave() {},
  };
}

function simpleView(view, navId, load, render) {
  $(navId).setAttribute('aria-current', 'page');
  return {
    async refresh() {
      const d = await load();
      view.replaceChildren(render(d));
    },
    leave() {},
  };
}

function confirmDialog(text) {
  const d = $('confirm');
  $('confirm-text').textContent = text;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    $('confirm-cancel').focus();
  });
}

start();
