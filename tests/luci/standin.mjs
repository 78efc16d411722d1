// A stand-in for uhttpd + rpcd serving luci-app-mnigs inside LuCI's real client-side framework
// ($MNIGS_LUCI: luci.js, ui.js, form.js, … and the bootstrap theme, unmodified):
//   - the page of a view as LuCI's view.ut + bootstrap header.ut/footer.ut build it
//     (/cgi-bin/luci/admin/services/mnigs/status and …/settings), the menu from the app's menu.d file;
//   - /ubus/ (JSON-RPC 2.0, batches): `session access`, `uci get/set/add/delete/order/changes`
//     (tests/luci/uci.mjs, staged until apply), `luci getFeatures`, `file list`, and `luci.mnigs`,
//     for which the app's real rpcd plugin is run as rpcd runs it (`call METHOD`, the arguments as
//     JSON on stdin, plus `ubus_rpc_session` as uhttpd adds it) after checking the app's ACL file;
//   - /cgi-bin/luci/admin/uci/apply_rollback, apply_unchecked, confirm, revert: apply commits the
//     staged changes to the config file and then calls `onApply` (the test sends SIGHUP to the
//     daemon, as reload_config does through procd).
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join, normalize, extname } from 'node:path';
import { Package } from './uci.mjs';

const TYPES = { '.js': 'application/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json' };
const SESSION = '0123456789abcdef0123456789abcdef';
const TOKEN = 'fedcba9876543210fedcba9876543210';

// The menu tree LuCI's `admin/menu` answers, built from the app's menu.d file.
function menuTree(app) {
  const entries = JSON.parse(readFileSync(join(app, 'root/usr/share/luci/menu.d/luci-app-mnigs.json'), 'utf8'));
  const root = { satisfied: true, children: { admin: { title: 'Administration', satisfied: true, action: { type: 'firstchild' }, children: {
    services: { title: 'Services', satisfied: true, action: { type: 'firstchild' }, children: {} } } } } };
  for (const [path, e] of Object.entries(entries)) {
    const parts = path.split('/');
    let node = root;
    for (const p of parts.slice(0, -1)) node = node.children[p];
    node.children = node.children || {};
    node.children[parts[parts.length - 1]] = { ...e, satisfied: true, children: {} };
  }
  return root;
}

function bootPage(view, dispatchpath) {
  const env = {
    media: '/luci-static/bootstrap', resource: '/luci-static/resources', scriptname: '/cgi-bin/luci',
    pathinfo: '/' + dispatchpath.join('/'), documentroot: '/www', requestpath: dispatchpath, dispatchpath,
    pollinterval: 5, ubuspath: '/ubus/', sessionid: SESSION, token: TOKEN,
    nodespec: { satisfied: true, readonly: false, action: { type: 'view', path: view } },
    apply_rollback: 90, apply_holdoff: 1, apply_timeout: 5, apply_display: 1, rollback_token: null,
  };
  return `<!DOCTYPE html>
<html lang="en" data-darkmode="false">
<head>
<meta charset="utf-8">
<title>OpenWrt | Mesh Internet Gateway</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css">
<script src="/cgi-bin/luci/admin/translations/en"></script>
<script src="/luci-static/resources/cbi.js"></script>
</head>
<body class="lang_en" data-page="${dispatchpath.join('-')}">
<header>
<a class="brand" href="/">OpenWrt</a>
<ul class="nav" id="topmenu" style="display:none"></ul>
<div id="indicators" class="pull-right"></div>
</header>
<div id="maincontent" class="container">
<div id="tabmenu" style="display:none"></div>
<script type="text/javascript" src="/luci-static/resources/luci.js"></script>
<script type="text/javascript">
L = new LuCI(${JSON.stringify(env).replace(/\//g, '\\/')});
</script>
<div id="view">
<div class="spinning">Loading view…</div>
<script type="text/javascript">
L.require('ui').then(function(ui) { ui.instantiateView('${view}'); });
</script>
</div>
</div>
<footer><span>Powered by LuCI (stand-in)</span><ul class="breadcrumb pull-right" id="modemenu" style="display:none"></ul></footer>
<script type="text/javascript">L.require('menu-bootstrap')</script>
</body>
</html>
`;
}

// Runs the rpcd plugin: `PLUGIN call METHOD` with the arguments on stdin; its stdout is the answer.
function runPlugin(opts, method, args) {
  return new Promise((resolve) => {
    const child = spawn(opts.plugin, ['call', method], { env: opts.pluginEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code) => {
      try {
        const v = JSON.parse(out);
        resolve(v !== null && typeof v === 'object' && !Array.isArray(v) ? [0, v] : [2]);
      } catch (e) {
        opts.log.push({ plugin: method, code, stdout: out, stderr: err });
        resolve([2]);
      }
    });
    child.stdin.end(JSON.stringify(args));
  });
}

export async function startStandin(opts) {
  const log = opts.log = [];
  const calls = [];
  const pkg = new Package(opts.config);
  const acl = JSON.parse(readFileSync(join(opts.app, 'root/usr/share/rpcd/acl.d/luci-app-mnigs.json'), 'utf8'))['luci-app-mnigs'];
  const granted = new Set([...(acl.read.ubus['luci.mnigs'] || []), ...(acl.write.ubus['luci.mnigs'] || [])]);
  const applied = [];
  const committedChanges = [];

  async function ubusCall(obj, method, args) {
    calls.push({ object: obj, method, args });
    if (obj === 'session' && method === 'access') return [0, { access: true }];
    if (obj === 'luci' && method === 'getFeatures') return [0, {}];
    if (obj === 'file' && method === 'list') return [4];
    if (obj === 'uci') {
      if (args.config !== undefined && args.config !== 'mnigs') { log.push({ otherConfig: args.config, method }); return method === 'get' ? [0, { values: {} }] : [6]; }
      switch (method) {
        case 'get': return [0, { values: pkg.values() }];
        case 'set': return [pkg.set(args.section, args.values)];
        case 'add': { const r = pkg.add(args.type, args.name, args.values); return [r.code, { section: r.section }]; }
        case 'delete': return [pkg.delete(args.section, args.options ?? args.option)];
        case 'order': return [pkg.order(args.sections)];
        case 'changes': return [0, { changes: pkg.changes.length ? { mnigs: pkg.changes } : {} }];
        case 'rename': return [0];
        default: return [3];
      }
    }
    if (obj === 'luci.mnigs') {
      if (!granted.has(method)) return { error: { code: -32002, message: 'Access denied' } };
      return runPlugin(opts, method, { ...args, ubus_rpc_session: SESSION });
    }
    return { error: { code: -32000, message: 'Object not found' } };
  }

  async function ubus(msg) {
    if (msg.method !== 'call' || !Array.isArray(msg.params))
      return { jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'Method not found' } };
    const [sid, obj, method, args] = msg.params;
    if (sid !== SESSION) return { jsonrpc: '2.0', id: msg.id, error: { code: -32002, message: 'Access denied' } };
    const r = await ubusCall(obj, method, args || {});
    return Array.isArray(r) ? { jsonrpc: '2.0', id: msg.id, result: r } : { jsonrpc: '2.0', id: msg.id, ...r };
  }

  function body(req) {
    return new Promise((resolve) => {
      let b = '';
      req.on('data', (d) => { b += d; });
      req.on('end', () => resolve(b));
    });
  }

  function file(res, path) {
    if (!existsSync(path)) { res.writeHead(404); res.end('not found'); return; }
    res.writeHead(200, { 'Content-Type': TYPES[extname(path)] || 'application/octet-stream' });
    res.end(readFileSync(path));
  }

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = normalize(decodeURIComponent(url.pathname));
    log.push({ http: req.method + ' ' + p });
    try {
      if (p.startsWith('/luci-static/resources/view/mnigs/'))
        return file(res, join(opts.app, 'htdocs', p));
      if (p.startsWith('/luci-static/resources/') || p.startsWith('/luci-static/bootstrap/'))
        return file(res, join(opts.luci, p.slice('/luci-static/'.length)));
      if (p === '/ubus' || p === '/ubus/') {
        const msg = JSON.parse(await body(req));
        const out = Array.isArray(msg) ? await Promise.all(msg.map(ubus)) : await ubus(msg);
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify(out));
      }
      if (p.startsWith('/cgi-bin/luci/admin/translations/')) {
        res.writeHead(200, { 'Content-Type': 'application/javascript' });
        return res.end('');
      }
      if (p === '/cgi-bin/luci/admin/menu') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify(menuTree(opts.app)));
      }
      const m = /^\/cgi-bin\/luci\/admin\/uci\/(apply_rollback|apply_unchecked|confirm|revert)$/.exec(p);
      if (m) {
        await body(req);
        if (m[1] === 'revert') { pkg.revert(); res.writeHead(200); return res.end(); }
        if (m[1] === 'confirm') { res.writeHead(200); return res.end(); }
        const staged = pkg.changes.slice();
        const changed = pkg.commit();
        if (changed) committedChanges.push(...staged);
        if (changed) {
          applied.push(Date.now());
          if (opts.onApply) await opts.onApply();
        }
        if (m[1] === 'apply_unchecked') { res.writeHead(changed ? 204 : 204); return res.end(); }
        if (!changed) { res.writeHead(204); return res.end(); }
        res.writeHead(200, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify({ token: TOKEN }));
      }
      const v = /^\/cgi-bin\/luci\/admin\/services\/mnigs\/(status|settings)$/.exec(p);
      if (v) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=UTF-8' });
        return res.end(bootPage('mnigs/' + v[1], ['admin', 'services', 'mnigs', v[1]]));
      }
      res.writeHead(404);
      res.end('not found');
    } catch (e) {
      log.push({ error: String(e.stack || e) });
      res.writeHead(500);
      res.end(String(e));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = 'http://127.0.0.1:' + server.address().port;
  return {
    base,
    url: (view) => base + '/cgi-bin/luci/admin/services/mnigs/' + view,
    calls,
    applied,
    committedChanges,
    log,
    pkg,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
