// Small DOM helpers and the pages other than the cluster view: node,
// discovery, DHCP. Text always goes in as text nodes, never as markup.

// h('a', {href: '#'}, 'text', child...) → element
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function table(headers, rows, attrs) {
  return h('table', attrs || {},
    h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, ...rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c))))));
}

// key/value pairs as a definition table
export function facts(pairs) {
  return h('table', { class: 'facts' },
    h('tbody', {}, ...pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, String(v))))));
}

export function time(ms) {
  if (!ms) return '';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

const STEP_ORDER = ['dhcp', 'tftp', 'script', 'kernel', 'initrd', 'meta-data', 'phone-home'];

// The boot-step timeline of a node's current boot.
export function timeline(steps) {
  if (!steps) return h('p', { class: 'muted', id: 'no-steps' }, 'No boot seen since the appliance started.');
  const start = steps.boot_started_ms;
  const items = STEP_ORDER.map((name) => {
    const s = steps.steps[name];
    if (!s) return h('li', { class: 'step missing', 'data-step': name }, h('span', { class: 'name' }, name), ' not reached');
    const off = ((s.first_ms - start) / 1000).toFixed(1);
    return h('li', { class: 'step reached', 'data-step': name },
      h('span', { class: 'name' }, name),
      ` +${off} s`,
      s.count > 1 ? ` (${s.count}×)` : '',
      h('span', { class: 'detail' }, s.detail));
  });
  return h('div', {},
    h('p', {}, `Boot started ${time(start)}; last seen ${time(steps.last_seen_ms)}${steps.ip ? ` at ${steps.ip}` : ''}.`),
    h('ol', { class: 'timeline', id: 'timeline' }, ...items));
}

export function nodePage(v, write, actions) {
  const c = v.component;
  const parts = [];
  parts.push(h('div', { class: 'title-row' },
    h('h1', {}, c.ID),
    h('span', { class: `badge ${powerBadge(c.State)}`, id: 'node-state' }, c.State || 'unknown'),
    h('span', { class: 'spacer' }),
    write ? h('span', { class: 'actions noprint', id: 'power-actions' },
      h('button', { type: 'button', id: 'power-on', onclick: () => actions.power('on') }, 'Power on'),
      h('button', { type: 'button', id: 'power-off', onclick: () => actions.power('off') }, 'Power off'),
      h('button', { type: 'button', id: 'power-restart', onclick: () => actions.power('restart') }, 'Restart'))
      : h('span', { class: 'muted noprint', id: 'read-only' }, 'read-only'),
    h('button', { type: 'button', class: 'noprint', id: 'print', onclick: () => window.print() }, 'Print report')));
  parts.push(h('section', {}, h('h2', {}, 'Identity'), facts([
    ['NID', c.NID], ['Type', c.Type], ['State', c.State], ['Flag', c.Flag],
    ['Enabled', c.Enabled === false ? 'no' : 'yes'], ['Role', c.Role], ['SubRole', c.SubRole],
    ['Arch', c.Arch], ['Class', c.Class], ['Partition', v.partition],
  ])));
  parts.push(h('section', {}, h('h2', {}, 'Interfaces'),
    v.interfaces.length ? table(['MAC', 'Addresses', 'Description'], v.interfaces.map((i) => [
      i.MACAddress, (i.IPAddresses || []).map((a) => a.IPAddress + (a.Network ? ` (${a.Network})` : '')).join(', '),
      i.Description || '']))
      : h('p', { class: 'muted' }, 'No interfaces.')));
  parts.push(h('section', {}, h('h2', {}, 'Groups'),
    v.groups.length ? h('ul', { class: 'inline', id: 'groups' }, ...v.groups.map((g) => h('li', {}, g)))
      : h('p', { class: 'muted' }, 'In no group.')));
  const b = v.boot;
  parts.push(h('section', {}, h('h2', {}, 'Boot configuration'),
    b ? facts([['Kernel', b.kernel], ['Initrd', b.initrd], ['Parameters', b.params]])
      : h('p', { class: 'muted' }, 'No boot configuration applies.')));
  parts.push(h('section', {}, h('h2', {}, 'Boot steps'), timeline(v.steps)));
  parts.push(h('section', {}, h('h2', {}, 'Power transitions'),
    v.transitions.length ? table(['Created', 'Operation', 'Transition', 'This node', 'Detail'],
      v.transitions.map((t) => [t.created, t.operation, t.status, t.task_status, t.error || t.description]),
      { id: 'transitions' })
      : h('p', { class: 'muted' }, 'None recently.')));
  if (v.phone_home) {
    const p = v.phone_home;
    parts.push(h('section', {}, h('h2', {}, 'Phone-home'),
      facts([['Received', p.received], ['From', p.address], ['Host name', p.hostname], ['Instance', p.instance_id]])));
  }
  if (v.console) {
    const pre = h('pre', { class: 'console', id: 'console', tabindex: '0' }, 'loading…');
    parts.push(h('section', {}, h('h2', {}, 'Console'),
      h('button', { type: 'button', class: 'noprint', onclick: () => actions.console(pre) }, 'Refresh'), pre));
    actions.console(pre);
  }
  return h('article', { class: 'node', id: 'node-page', 'data-xname': c.ID }, ...parts);
}

function powerBadge(state) {
  const s = (state || '').toLowerCase();
  if (s === 'on' || s === 'ready') return 'p-on';
  if (s === 'off') return 'p-off';
  return 'p-unknown';
}

export function discoveryPage(d) {
  if (!d.jobs.length) return h('div', { id: 'discovery-page' }, h('h1', {}, 'Discovery'), h('p', { class: 'muted' }, 'No discovery job has run since the appliance started.'));
  const jobs = [...d.jobs].reverse().map((j) => {
    const total = j.total || j.addresses || 0;
    const done = j.phase === 'scan' ? j.scanned : j.done;
    return h('section', { class: 'job', 'data-job': j.id },
      h('h2', {}, `${j.kind} ${j.id.slice(0, 8)} — ${j.status}`),
      h('p', {}, `Started ${j.started}${j.finished ? `, finished ${j.finished}` : ''}. Phase ${j.phase}: `,
        h('progress', { max: String(Math.max(total, 1)), value: String(done) }),
        ` ${done} / ${total}; found ${j.found}, collected ${j.collected}, failed ${j.failed}, skipped ${j.skipped}.`),
      (j.bmcs || []).length ? table(['BMC', 'xname', 'Status', 'Reason', 'Systems', 'MACs'],
        j.bmcs.map((b) => [b.address, b.xname || '', b.status, b.reason || '', b.systems, b.macs]),
        { class: 'bmcs' }) : '');
  });
  return h('div', { id: 'discovery-page' }, h('h1', {}, 'Discovery'), ...jobs);
}

const MAX_LEASE_ROWS = 5000;

export function dhcpPage(d) {
  const pools = d.pools.length ? table(['Subnet', 'Pool', 'Use'], d.pools.map((p) => [p.subnet, p.pool,
    h('span', {}, h('meter', { min: '0', max: String(p.size), value: String(p.used) }), ` ${p.used} / ${p.size}`)]))
    : h('p', { class: 'muted' }, 'No pools configured.');
  const rows = d.leases.slice(0, MAX_LEASE_ROWS).map((l) => [l.ip, l.mac, l.kind, l.xname, l.expires || 'never',
    l.expired ? 'expired' : '']);
  return h('div', { id: 'dhcp-page' },
    h('h1', {}, 'DHCP'),
    h('p', {}, d.enabled ? 'DHCP is serving.' : 'DHCP is off on this appliance; leases below are as stored.'),
    h('h2', {}, 'Pools'), pools,
    h('h2', {}, `Leases (${d.leases.length})`),
    d.leases.length > MAX_LEASE_ROWS ? h('p', { class: 'muted' }, `First ${MAX_LEASE_ROWS} shown.`) : '',
    d.leases.length ? table(['Address', 'MAC', 'Kind', 'Node', 'Expires', ''], rows, { id: 'leases' })
      : h('p', { class: 'muted' }, 'No leases.'));
}
