// Runs luci-app-mnigs's views the way LuCI loads them (the file body as a function of its
// 'require'd modules) against small stand-ins for LuCI's classes, and reports what they did:
//   node harness.mjs status STATUS.js   → renders with fixture data, clicks every button, prints JSON
//   node harness.mjs settings SETTINGS.js → prints every section and option the form declares
// Used by tests/luci.rs, which checks the report.
import { readFileSync } from 'node:fs';

const [mode, file, valuesJson] = process.argv.slice(2);
// settings: values to run every option's validate function on (reported per option).
const probeValues = valuesJson ? JSON.parse(valuesJson) : [];
const source = readFileSync(file, 'utf8');

String.prototype.format = function (...args) {
  let i = 0;
  return this.replace(/%[sd%]/g, (m) => (m === '%%' ? '%' : m === '%d' ? String(Math.floor(+args[i++] || 0)) : String(args[i++])));
};

// A DOM stand-in: nodes with a tag, attributes and children; text is kept as strings.
function E(tag, a, b) {
  let attrs = {}, children = [];
  if (Array.isArray(tag)) return { tag: '#fragment', attrs, children: a || [] };
  // As LuCI's dom.create: anything but a plain object or array as the second argument is the
  // content (so E('p', node) takes node for the attributes and drops it, as LuCI does).
  if (a !== undefined && (Array.isArray(a) || !(a instanceof Object))) children = a;
  else { attrs = a || {}; children = b === undefined ? [] : b; }
  if (!Array.isArray(children)) children = [children];
  return { tag, attrs, children: children.filter((c) => c !== null && c !== undefined) };
}
// The views make text nodes and SVG through document.
globalThis.document = {
  createTextNode: (s) => ({ tag: '#text', attrs: {}, children: [String(s)] }),
  createElementNS: (ns, tag) => ({ tag, attrs: {}, children: [],
    setAttribute(k, v) { this.attrs[k] = v; }, appendChild(c) { this.children.push(c); } }),
};
function text(n) {
  if (n === null || n === undefined) return '';
  if (typeof n !== 'object') return String(n);
  return n.children.map(text).join(' ');
}
function walk(n, f) {
  if (!n || typeof n !== 'object') return;
  f(n);
  n.children.forEach((c) => walk(c, f));
}

const calls = [], notes = [], polls = [];
const fixtures = {
  status: { success: true, name: 'sub', version: '0.1.0', access: 'full',
    gateway: { enabled: true, methods: ['wireguard', 'openvpn'], uplink: { healthy: true, checkedAgo: 2 },
      uplinkCheck: { state: 'unverified', problem: 'no uplink check works: <b>none</b> answered' },
      terms: { maxSubscribers: 10, subscribers: 1, leaseSeconds: 300, price: 0, bandwidthDown: 0, bandwidthUp: 0 } },
    subscriber: { state: 'connected', gateway: { name: 'gw', address: '10.77.0.3', port: 65533, score: 1.25, quality: { rttMs: 12.34, loss: 0.25, window: 64, consecutiveFailures: 0 } },
      interface: 'mnigs-wgc', method: 'wireguard', ipv4: '100.127.0.2', ipv6: 'fd7e:7e7e::2', leaseLeft: 42, lastError: null,
      ranking: [{ name: 'gw', score: 1.25 }, { name: 'gw2', score: 3.5 }] } },
  gateways: { success: true, gateways: [
    { name: 'gw', address: '10.77.0.3', port: 65533, how: 'routes:babel', hops: 2, seenAgo: 3, info: { terms: { subscribers: 1, maxSubscribers: 10 } },
      quality: { name: 'gw', rttMs: 12.34, loss: 0.25, probes: 100, lost: 25 } },
    { name: 'gw2', address: '10.77.0.9', port: 65533, how: 'routes:babel', hops: 3, seenAgo: 400, info: { terms: { subscribers: 0, maxSubscribers: 5 } } }] },
  sessions: { success: true, sessions: [{ name: 'other', address: '10.77.0.7', method: 'wireguard', ipv4: '100.127.0.3', expiresIn: 250 }] },
  scan: { success: true, gateways: [{}, {}] },
  disconnect: { success: true, left: 'gw' },
  connect: { success: true, gateway: 'gw2' },
};

const rpc = {
  declare(opts) {
    return (...args) => {
      const params = {};
      (opts.params || []).forEach((p, i) => { params[p] = args[i]; });
      calls.push({ object: opts.object, method: opts.method, params });
      return Promise.resolve(fixtures[opts.method]);
    };
  },
};
const ui = {
  createHandlerFn(ctx, fn, ...args) {
    return () => (typeof fn === 'string' ? ctx[fn] : fn).apply(ctx, args);
  },
  addNotification(title, node, cls) { notes.push({ text: text(node), cls }); },
};
const poll = { add(fn, interval) { polls.push({ fn, interval }); } };
const dom = { content(node, children) { node.children = [children]; } };
const view = { extend(o) { return o; } };
function cbi_update_table(table, rows, placeholder) {
  if (!rows.length) table.children.push(E('tr', {}, [placeholder]));
  rows.forEach((r) => table.children.push(E('tr', {}, r.map((c) => E('td', {}, [c])))));
}

// form stand-in: records sections and options.
const declared = [];
class Option {
  constructor(section, cls, name, title, description) {
    Object.assign(this, { cls, name, title, description, values: [] });
    section.options.push(this);
  }
  value(v, label) { this.values.push(v); }
  depends(opt, v) { (this.deps = this.deps || []).push([opt, v]); }
}
class Section {
  constructor(map, cls, args) {
    this.cls = cls;
    this.args = args;
    this.options = [];
    this.tabs = [];
    declared.push(this);
  }
  option(cls, name, title, description) { return new Option(this, cls.name, name, title, description); }
  taboption(tab, cls, name, title, description) {
    if (!this.tabs.includes(tab)) throw new Error('taboption before tab ' + tab);
    return this.option(cls, name, title, description);
  }
  tab(name) { this.tabs.push(name); }
}
class Map {
  constructor(config, title, description) { this.config = config; }
  section(cls, ...args) { return new Section(this, cls.name, args); }
  render() { return Promise.resolve(E('div', {}, [])); }
}
const form = { Map, NamedSection: class NamedSection {}, TypedSection: class TypedSection {}, GridSection: class GridSection {},
  Value: class Value {}, Flag: class Flag {}, ListValue: class ListValue {}, DynamicList: class DynamicList {}, MultiValue: class MultiValue {} };

const uciData = { gateway: { method: ['wireguard', 'openvpn'] }, subscriber: { method: ['gre', 'cjdns', 'socks', 'softether'] } };
const uci = {
  load() { return Promise.resolve(); },
  get(conf, sec, opt) { return (uciData[sec] || {})[opt]; },
  sections(conf, type) { return uciData[type] ? [{ '.name': type }] : []; },
  set() {}, unset() {},
};
const modules = { view, rpc, poll, ui, dom, form, uci, E, _: (s) => s, cbi_update_table };
const requires = [...source.matchAll(/^'require (\w+)';$/gm)].map((m) => m[1]);
for (const r of requires) if (!(r in modules)) throw new Error('unknown require ' + r);
const names = Object.keys(modules);
const v = new Function(...names, source)(...names.map((n) => modules[n]));

if (mode === 'status') {
  const data = await v.load();
  const root = v.render(data);
  const buttons = [];
  walk(root, (n) => { if (n.tag === 'button') buttons.push(n); });
  const page = text(root);
  const clicked = [];
  for (const b of buttons) {
    const before = calls.length;
    await b.attrs.click();
    clicked.push({ label: text(b), calls: calls.slice(before) });
  }
  await polls[0].fn();
  console.log(JSON.stringify({ requires, loadCalls: calls.slice(0, 3).map((c) => c.method), page, clicked, notes,
    polls: polls.map((p) => p.interval), saveHidden: v.handleSave === null && v.handleSaveApply === null && v.handleReset === null }));
} else {
  await v.load();
  await v.render();
  console.log(JSON.stringify({ requires, sections: declared.map((s) => ({ cls: s.cls, args: s.args, tabs: s.tabs,
    options: s.options.map((o) => ({ cls: o.cls, name: o.name, datatype: o.datatype, validate: typeof o.validate, values: o.values, default: o.default, retain: o.retain === true, deps: o.deps || [],
      accepts: typeof o.validate === 'function' ? probeValues.map((v) => o.validate.call(o, 'x', v) === true) : null })) })) }));
}
