// The built-in page of mnigs. Talks only to /jsonrpc on the node that served it; builds every
// element with textContent, never innerHTML, because names and addresses come from other nodes.
'use strict';

const POLL_MS = 3000;
const SVG = 'http://www.w3.org/2000/svg';
let nextId = 1;
let busy = false;
// Given by the node with the page to callers who may act; the node refuses actions without it,
// and a page from another site cannot read it.
const TOKEN = document.querySelector('meta[name="mnigs-token"]').content;

async function rpc(method, params) {
  const headers = { 'Content-Type': 'application/json' };
  if (TOKEN) headers['X-Mnigs-Token'] = TOKEN;
  const res = await fetch('/jsonrpc', {
    method: 'POST',
    headers,
    body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params: params || {} }),
  });
  const body = await res.json();
  if (body.error) throw new Error(body.error.message);
  return body.result;
}

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function set(id, text) {
  document.getElementById(id).textContent = text === undefined || text === null || text === '' ? '–' : String(text);
}

function say(text, isError) {
  const m = document.getElementById('message');
  m.hidden = false;
  m.textContent = text;
  m.className = isError ? 'error' : '';
}

function ago(s) {
  if (s === undefined || s === null) return '–';
  if (s < 90) return s + ' s ago';
  if (s < 5400) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function fillTable(id, rows, columns, empty) {
  const body = document.querySelector('#' + id + ' tbody');
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el('tr', null, { class: 'empty' });
    tr.appendChild(el('td', empty, { colspan: String(columns) }));
    body.appendChild(tr);
    return;
  }
  for (const cells of rows) {
    const tr = el('tr');
    for (const c of cells) tr.appendChild(c instanceof Node ? wrap(c) : el('td', c === null || c === undefined ? '–' : c));
    body.appendChild(tr);
  }
}

function wrap(node) {
  const td = el('td');
  td.appendChild(node);
  return td;
}

function renderStatus(st) {
  set('node-name', st.name);
  set('version', 'v' + st.version);
  const access = st.access || 'readonly';
  document.body.classList.toggle('readonly', access !== 'full');
  set('access', access === 'full' ? 'control' : 'read-only');
  const sub = st.subscriber;
  const state = document.getElementById('sub-state');
  if (!sub) {
    set('sub-state', 'subscriber role disabled');
    state.className = '';
    for (const id of ['sub-gateway', 'sub-tunnel', 'sub-address', 'sub-lease', 'sub-error']) set(id, null);
    return;
  }
  set('sub-state', sub.state);
  state.className = 'state-' + sub.state;
  const gw = sub.gateway;
  set('sub-gateway', gw ? gw.name + ' (' + gw.address + ')' : null);
  // A SOCKS tunnel carries TCP and DNS only (no ping, no other UDP): say so where it is shown.
  const carries = sub.method === 'socks' ? ' (TCP and DNS only)' : '';
  set('sub-tunnel', sub.interface ? sub.interface + ' · ' + sub.method + carries : null);
  set('sub-address', [sub.ipv4, sub.ipv6].filter(Boolean).join(' · '));
  set('sub-lease', sub.leaseLeft !== undefined ? sub.leaseLeft + ' s' : null);
  set('sub-error', sub.lastError);
}

// This node as a gateway: its uplink, and whether its uplink check works.
function renderUplink(gw) {
  const up = (gw && gw.uplink) || {};
  const check = (gw && gw.uplinkCheck) || {};
  const health = up.healthy === true ? 'healthy' : up.healthy === false ? 'down' : null;
  const parts = [health];
  if (health && up.checkedAgo !== undefined) parts.push('checked ' + up.checkedAgo + ' s ago');
  if (Array.isArray(up.targets) && up.targets.length) parts.push('probed via ' + up.targets.join(', '));
  set('gw-uplink', parts.filter(Boolean).join(' · '));
  set('gw-uplink-check', check.state ? check.state + (check.problem ? ': ' + check.problem : '') : null);
}

// A node is listed once with every address it was found at (IPv6 ones in brackets).
function addresses(g) {
  const list = Array.isArray(g.addresses) && g.addresses.length ? g.addresses : [g.address];
  return list.map((a) => (String(a).includes(':') ? '[' + a + ']' : a) + ':' + g.port).join(' · ');
}

function renderGateways(list, st) {
  const current = st.subscriber && st.subscriber.gateway ? st.subscriber.gateway.address : null;
  const rows = list.map((g) => {
    const info = g.info || {};
    const terms = info.terms || {};
    let action = '';
    if (g.address === current || (Array.isArray(g.addresses) && g.addresses.includes(current))) {
      action = el('span', 'in use');
    } else if (st.access === 'full' && st.subscriber) {
      action = el('button', 'Connect', { type: 'button', class: 'action connect', 'data-address': g.address, 'data-port': String(g.port) });
      action.addEventListener('click', () => act('connect', { address: g.address, port: g.port }, 'Connecting to ' + g.name));
    }
    const load = terms.maxSubscribers ? terms.subscribers + '/' + terms.maxSubscribers : null;
    return [g.name, addresses(g), g.hops || '?', g.how, (info.methods || []).join(', '), load, ago(g.seenAgo), action];
  });
  fillTable('gateways', rows, 8, 'No gateway found yet; press Scan.');
}

function renderSessions(list) {
  const rows = list.map((s) => [s.name, s.address, s.method, [s.ipv4, s.ipv6].filter(Boolean).join(' · '), s.expiresIn + ' s']);
  fillTable('sessions', rows, 5, 'No subscribers.');
}

// A radial layout: ourselves in the middle, every other node on a ring; nodes a richer discovery
// source reports as relays (kind "node") go on an inner ring.
function renderGraph(graph) {
  const W = 560, H = 280, cx = W / 2, cy = H / 2;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'mesh graph');
  const pos = {};
  const others = graph.nodes.filter((n) => n.kind !== 'self');
  const inner = others.filter((n) => n.kind === 'node');
  const outer = others.filter((n) => n.kind !== 'node');
  const place = (list, r) => list.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(list.length, 1);
    pos[n.id] = [cx + r * 1.6 * Math.cos(a), cy + r * Math.sin(a)];
  });
  pos.self = [cx, cy];
  place(inner, 60);
  place(outer, 105);
  for (const l of graph.links) {
    const a = pos[l.from], b = pos[l.to];
    if (!a || !b) continue;
    const line = document.createElementNS(SVG, 'line');
    line.setAttribute('x1', a[0]); line.setAttribute('y1', a[1]);
    line.setAttribute('x2', b[0]); line.setAttribute('y2', b[1]);
    if (l.current) line.setAttribute('class', 'current');
    svg.appendChild(line);
    if (l.hops) {
      const t = document.createElementNS(SVG, 'text');
      t.setAttribute('x', (a[0] + b[0]) / 2); t.setAttribute('y', (a[1] + b[1]) / 2 - 4);
      t.setAttribute('class', 'hops');
      t.textContent = l.hops + (l.hops === 1 ? ' hop' : ' hops');
      svg.appendChild(t);
    }
  }
  for (const n of graph.nodes) {
    const p = pos[n.id];
    const g = document.createElementNS(SVG, 'g');
    g.setAttribute('class', 'node kind-' + n.kind);
    g.setAttribute('data-id', n.id);
    const c = document.createElementNS(SVG, 'circle');
    c.setAttribute('cx', p[0]); c.setAttribute('cy', p[1]); c.setAttribute('r', n.kind === 'self' ? 14 : 11);
    g.appendChild(c);
    // The label goes outwards from the centre so that it does not sit on the node's links.
    const t = document.createElementNS(SVG, 'text');
    const dx = p[0] - cx, dy = p[1] - cy, len = Math.hypot(dx, dy);
    if (len < 1) {
      t.setAttribute('x', p[0]); t.setAttribute('y', p[1] + 30);
    } else {
      t.setAttribute('x', p[0] + (dx / len) * 20); t.setAttribute('y', p[1] + (dy / len) * 20 + 4);
      t.setAttribute('text-anchor', dx > 5 ? 'start' : dx < -5 ? 'end' : 'middle');
    }
    t.textContent = n.name + (n.gateway ? ' ⇄ Internet' : '');
    g.appendChild(t);
    const title = document.createElementNS(SVG, 'title');
    title.textContent = n.address || 'this node';
    g.appendChild(title);
    svg.appendChild(g);
  }
  document.getElementById('graph').replaceChildren(svg);
}

async function refresh() {
  try {
    const [st, gws, sess, graph] = await Promise.all([
      rpc('status'), rpc('listGateways'), rpc('listSessions'), rpc('meshGraph'),
    ]);
    renderStatus(st);
    renderGateways(gws.gateways || [], st);
    renderSessions(sess.sessions || []);
    document.getElementById('sessions-section').hidden = !st.gateway;
    renderUplink(st.gateway);
    renderGraph(graph);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    say('Cannot read the node\'s state: ' + e.message, true);
  }
}

async function act(method, params, doing) {
  if (busy) return;
  busy = true;
  for (const b of document.querySelectorAll('button')) b.disabled = true;
  say(doing + '…', false);
  try {
    const r = await rpc(method, params);
    if (r.success === false) say(method + ' failed: ' + r.errorMsg, true);
    else if (method === 'scan') say('Scan done: ' + (r.gateways || []).length + ' gateway(s) answered.', false);
    else if (method === 'connect') say('Connected to ' + r.gateway + '.', false);
    else say(r.left ? 'Left ' + r.left + '.' : 'Disconnected.', false);
  } catch (e) {
    say(method + ' refused: ' + e.message, true);
  }
  busy = false;
  await refresh();
  for (const b of document.querySelectorAll('button')) b.disabled = false;
}

document.getElementById('scan').addEventListener('click', () => act('scan', {}, 'Scanning'));
document.getElementById('disconnect').addEventListener('click', () => act('disconnect', {}, 'Disconnecting'));
refresh();
setInterval(() => { if (!busy) refresh(); }, POLL_MS);
