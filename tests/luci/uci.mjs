// A small model of UCI for the /ubus/ stand-in (tests/luci/standin.mjs): parses a config file,
// keeps a session's staged changes the way rpcd's `uci` object does (get shows them merged;
// set/add/delete/order stage them; changes lists them), and writes the file back on commit in the
// layout `uci commit` uses (comments are gone after a commit, as with the real uci).
import { readFileSync, writeFileSync } from 'node:fs';

// Splits one line into words, honouring '…', "…" and backslash escapes; # starts a comment.
function words(line, lineNo) {
  const out = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i])) i++;
    if (i >= line.length || line[i] === '#') break;
    let w = '';
    while (i < line.length && !/\s/.test(line[i])) {
      const c = line[i];
      if (c === "'") {
        const end = line.indexOf("'", i + 1);
        if (end < 0) throw new Error('line ' + lineNo + ': unterminated quote');
        w += line.slice(i + 1, end);
        i = end + 1;
      } else if (c === '"') {
        i++;
        while (i < line.length && line[i] !== '"') {
          if (line[i] === '\\' && i + 1 < line.length) i++;
          w += line[i++];
        }
        if (i >= line.length) throw new Error('line ' + lineNo + ': unterminated quote');
        i++;
      } else if (c === '\\' && i + 1 < line.length) {
        w += line[i + 1];
        i += 2;
      } else if (c === '#') {
        break;
      } else {
        w += c;
        i++;
      }
    }
    out.push(w);
    if (line[i] === '#') break;
  }
  return out;
}

let anonCounter = 0;
function anonName() {
  anonCounter += 1;
  return 'cfg' + (0x0a0000 + anonCounter * 0x1f3).toString(16).padStart(6, '0');
}

// Parses UCI text into [{ name, type, anonymous, options: Map(name → string | string[]) }].
export function parse(text) {
  const sections = [];
  let cur = null;
  text.split('\n').forEach((line, idx) => {
    const w = words(line, idx + 1);
    if (!w.length) return;
    if (w[0] === 'package') return;
    if (w[0] === 'config') {
      cur = { type: w[1], name: w[2] || anonName(), anonymous: !w[2], options: new Map() };
      sections.push(cur);
    } else if (w[0] === 'option' && cur) {
      cur.options.set(w[1], w[2] ?? '');
    } else if (w[0] === 'list' && cur) {
      const prev = cur.options.get(w[1]);
      cur.options.set(w[1], Array.isArray(prev) ? [...prev, w[2] ?? ''] : [w[2] ?? '']);
    } else {
      throw new Error('line ' + (idx + 1) + ': cannot parse ' + JSON.stringify(line));
    }
  });
  return sections;
}

function quote(v) {
  return "'" + String(v).replace(/'/g, "'\\''") + "'";
}

// The file `uci commit` writes.
export function serialize(sections) {
  let out = '';
  for (const s of sections) {
    out += '\nconfig ' + s.type + (s.anonymous ? '' : ' ' + quote(s.name)) + '\n';
    for (const [k, v] of s.options) {
      if (Array.isArray(v)) v.forEach((x) => { out += '\tlist ' + k + ' ' + quote(x) + '\n'; });
      else out += '\toption ' + k + ' ' + quote(v) + '\n';
    }
  }
  return out + '\n';
}

function clone(sections) {
  return sections.map((s) => ({ ...s, options: new Map([...s.options].map(([k, v]) => [k, Array.isArray(v) ? [...v] : v])) }));
}

// One config file with one session's staged changes.
export class Package {
  constructor(path) {
    this.path = path;
    this.reload();
  }

  reload() {
    this.committed = parse(readFileSync(this.path, 'utf8'));
    this.staged = clone(this.committed);
    this.changes = [];
  }

  find(name) {
    return this.staged.find((s) => s.name === name);
  }

  // rpcd `uci get {config}`: { values: { name: { '.anonymous', '.type', '.name', '.index', … } } }
  values() {
    const values = {};
    this.staged.forEach((s, i) => {
      const v = { '.anonymous': s.anonymous, '.type': s.type, '.name': s.name, '.index': i };
      for (const [k, x] of s.options) v[k] = Array.isArray(x) ? [...x] : x;
      values[s.name] = v;
    });
    return values;
  }

  // rpcd `uci set`: a string sets an option (an empty one deletes it), an array replaces a list.
  set(section, values) {
    const s = this.find(section);
    if (!s) return 4;
    for (const [k, v] of Object.entries(values || {})) {
      if (Array.isArray(v)) {
        const list = v.map(String);
        if (list.length) s.options.set(k, list); else s.options.delete(k);
        this.changes.push(['list-set', section, k, list]);
      } else if (v === '' || v === null) {
        s.options.delete(k);
        this.changes.push(['remove', section, k]);
      } else {
        s.options.set(k, String(v));
        this.changes.push(['set', section, k, String(v)]);
      }
    }
    return 0;
  }

  add(type, name, values) {
    if (name && this.find(name)) return { code: 0, section: name };
    const s = { type, name: name || anonName(), anonymous: !name, options: new Map() };
    this.staged.push(s);
    this.changes.push(['add', s.name, type]);
    this.set(s.name, values);
    return { code: 0, section: s.name };
  }

  delete(section, options) {
    const i = this.staged.findIndex((s) => s.name === section);
    if (i < 0) return 4;
    if (Array.isArray(options)) {
      options.forEach((o) => { this.staged[i].options.delete(o); this.changes.push(['remove', section, o]); });
    } else if (typeof options === 'string') {
      this.staged[i].options.delete(options);
      this.changes.push(['remove', section, options]);
    } else {
      this.staged.splice(i, 1);
      this.changes.push(['remove', section]);
    }
    return 0;
  }

  order(names) {
    const rank = new Map((names || []).map((n, i) => [n, i]));
    this.staged.sort((a, b) => (rank.get(a.name) ?? 1e9) - (rank.get(b.name) ?? 1e9));
    this.changes.push(['order', names]);
    return 0;
  }

  // Writes the staged state to the file; true when something was written.
  commit() {
    if (!this.changes.length) return false;
    writeFileSync(this.path, serialize(this.staged));
    this.reload();
    return true;
  }

  revert() {
    this.staged = clone(this.committed);
    this.changes = [];
  }
}
