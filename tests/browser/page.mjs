// Drives mnigs's built-in page in Debian's chromium through playwright-core. Run by
// tests/web_browser.rs inside a node's network namespace:
//   node page.mjs full     URL OUTDIR GATEWAY_NAME GATEWAY_ADDRESS TUNNEL_IFNAME
//   node page.mjs readonly URL OUTDIR GATEWAY_NAME GATEWAY_ADDRESS
//   node page.mjs crosssite URL OUTDIR
//   node page.mjs rebind    URL OUTDIR
// (crosssite: serves an attacker's page on another port of 127.0.0.1 — another origin — whose
// script sends the node's actions the ways a page may without asking: no-cors fetches with a
// text/plain body, a text/plain form post; and a JSON fetch, which needs a preflight.
// rebind: DNS rebinding — chromium resolves evil.example to the node; the attacker's page is
// served for http://evil.example:PORT/ first, then its same-origin script reaches the node.)
// Prints one line per step; exits non-zero (with the reason on stderr) when the page misbehaves.
import { chromium } from 'playwright-core';
import http from 'node:http';

const [mode, url, outdir, gwName, gwAddr, tunnel] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 60000;

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  console.log('ok   ' + what);
}

async function text(page, sel) {
  return (await page.locator(sel).textContent()).trim();
}

async function waitText(page, sel, pred, what) {
  const start = Date.now();
  let last = '';
  while (Date.now() - start < STEP_MS) {
    last = await text(page, sel).catch(() => '');
    if (pred(last)) { console.log('ok   ' + what + ' (' + sel + ' = ' + JSON.stringify(last) + ')'); return last; }
    await page.waitForTimeout(100);
  }
  throw new Error('timed out: ' + what + '; ' + sel + ' was ' + JSON.stringify(last));
}

// The gateway's row by its IPv4 address (the row lists every address of the node).
function gwRow(page) {
  return page.locator('#gateways tbody tr', { hasText: gwAddr + ':' });
}

// "12 s ago" → 12; minutes and hours → large.
function seenSeconds(s) {
  const m = /^(\d+) s ago$/.exec(s);
  return m ? Number(m[1]) : 1e9;
}

async function full(page) {
  await page.goto(url);
  await waitText(page, '#sub-state', (t) => t === 'connected', 'page shows the subscriber connected');
  await waitText(page, '#sub-tunnel', (t) => t.startsWith(tunnel), 'status shows the tunnel interface');
  check((await gwRow(page).count()) === 1 && (await gwRow(page).textContent()).includes(gwName), 'gateways table lists ' + gwName + ' at ' + gwAddr);
  check((await page.locator('#gateways tbody tr', { hasText: gwName }).count()) === 1, 'one row for ' + gwName + ', whatever its addresses');
  check((await text(page, '#access')) === 'control', 'loopback caller gets the control page');
  await page.waitForSelector('#graph svg g.kind-gateway');
  check((await page.locator('#graph svg g.kind-gateway').count()) === 1, 'mesh graph draws the gateway');
  check((await page.locator('#graph line.current').count()) === 1, 'mesh graph marks the link in use');
  await page.screenshot({ path: outdir + '/page-connected.png', fullPage: true });

  await page.click('#disconnect');
  await waitText(page, '#sub-state', (t) => t === 'disconnected', 'Disconnect leaves the gateway');
  await waitText(page, '#sub-tunnel', (t) => t === '–', 'no tunnel after Disconnect');
  await waitText(page, '#message', (t) => t.includes('Left ' + gwName), 'message names the gateway left');
  // Let the table age so that the refresh by Scan is visible in the "Seen" column.
  const seenCell = gwRow(page).locator('td').nth(6);
  await waitText(page, '#gateways tbody tr:has-text("' + gwAddr + ':") td:nth-child(7)', (t) => seenSeconds(t) >= 4 && seenSeconds(t) < 1e9, 'gateway last seen a while ago');
  await page.click('#scan');
  await waitText(page, '#message', (t) => /Scan done: \d+ gateway\(s\)/.test(t), 'Scan reports the gateway');
  check(seenSeconds((await seenCell.textContent()).trim()) <= 2, 'Scan refreshed the gateways table');
  // Scan also reconnects (automatic mode is back on); leave again to test Connect.
  await waitText(page, '#sub-state', (t) => t === 'connected', 'Scan reconnects');
  await page.click('#disconnect');
  await waitText(page, '#sub-state', (t) => t === 'disconnected', 'Disconnect again');
  const connect = gwRow(page).locator('button.connect');
  await connect.waitFor();
  await page.screenshot({ path: outdir + '/page-disconnected.png', fullPage: true });
  await connect.click();
  await waitText(page, '#message', (t) => t === 'Connected to ' + gwName + '.', 'Connect connects');
  await waitText(page, '#sub-state', (t) => t === 'connected', 'status connected after Connect');
  await waitText(page, '#sub-tunnel', (t) => t.startsWith(tunnel + ' · wireguard'), 'status shows the tunnel after Connect');
  await waitText(page, '#sub-address', (t) => /^\d+\.\d+\.\d+\.\d+/.test(t), 'status shows the tunnel address');
  await waitText(page, '#gateways tbody tr:has-text("' + gwAddr + ':") td:nth-child(8)', (t) => t === 'in use', 'gateway row says in use');
  await page.screenshot({ path: outdir + '/page.png', fullPage: true });
  await page.click('#disconnect');
  await waitText(page, '#sub-state', (t) => t === 'disconnected', 'final Disconnect releases');
}

async function readonly(page) {
  await page.goto(url);
  await page.waitForSelector('#gateways tbody tr');
  await waitText(page, '#access', (t) => t === 'read-only', 'mesh caller gets the read-only page');
  check((await gwRow(page).count()) === 1 && (await gwRow(page).textContent()).includes(gwName), 'read-only page lists ' + gwName + ' at ' + gwAddr);
  check(!(await page.locator('#scan').isVisible()), 'no Scan button');
  check(!(await page.locator('#disconnect').isVisible()), 'no Disconnect button');
  check((await page.locator('button.connect').count()) === 0, 'no Connect buttons');
  await page.screenshot({ path: outdir + '/page-readonly.png', fullPage: true });
  // The buttons being hidden is cosmetic; the daemon must refuse the calls themselves.
  for (const [method, params] of [['disconnect', {}], ['scan', {}], ['connect', { address: '10.77.0.3' }]]) {
    const answer = await page.evaluate(async ([m, p]) => {
      const r = await fetch('/jsonrpc', { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: m, params: p }) });
      return r.json();
    }, [method, params]);
    check(answer.error && answer.error.code === -32001, method + ' refused with -32001 (' + JSON.stringify(answer.error) + ')');
  }
}

// The attacker's page: its script reports, per attempt, whether the request went out and was
// answered (an opaque response) or failed, in document.title as JSON.
function attackerPage(node) {
  const target = node + 'jsonrpc';
  return `<!doctype html><html><body><iframe name="sink"></iframe>
<form id="f" method="POST" action="${target}" enctype="text/plain" target="sink">
<input name='{"jsonrpc":"2.0","id":9,"method":"disconnect","params":{},"pad":"' value='"}'></form>
<script>
(async () => {
  const out = {};
  const calls = [['disconnect', {}], ['connect', { address: '127.0.0.9' }], ['scan', {}]];
  for (const [m, p] of calls) {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: m, params: p });
    try {
      const r = await fetch('${target}', { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body });
      out['nocors-' + m] = r.type;
    } catch (e) { out['nocors-' + m] = 'failed: ' + e.message; }
    try {
      const r = await fetch('${target}', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
      out['json-' + m] = 'answered ' + r.status;
    } catch (e) { out['json-' + m] = 'failed'; }
  }
  document.getElementById('f').submit();
  await new Promise((r) => setTimeout(r, 1500));
  document.title = JSON.stringify(out);
})();
</script></body></html>`;
}

async function crosssite(page) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(attackerPage(url));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const evil = 'http://127.0.0.1:' + server.address().port + '/';
  const seen = [];
  page.on('request', (r) => { if (r.url().startsWith(url)) seen.push(r.method() + ' ' + r.url()); });
  await page.goto(evil);
  await page.waitForFunction(() => document.title.startsWith('{'), null, { timeout: STEP_MS });
  const out = JSON.parse(await page.title());
  console.log('attacker page at ' + evil + ' sent: ' + JSON.stringify(out));
  console.log('requests to the node: ' + JSON.stringify(seen));
  for (const m of ['disconnect', 'connect', 'scan']) {
    check(out['nocors-' + m] === 'opaque', 'no-cors text/plain ' + m + ' reached the node and was answered');
    check(out['json-' + m] === 'failed', 'JSON ' + m + ' from another origin is stopped by the browser (no CORS)');
  }
  check(seen.some((r) => r.startsWith('POST')), 'the node received the cross-site POSTs');
  server.close();
}

async function rebind(page) {
  const node = new URL(url);
  const evil = 'http://evil.example:' + node.port + '/';
  // The attacker's server answers the first load; from then on the name is the node's.
  await page.route(evil, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>evil</title>' }));
  await page.goto(evil);
  await page.unroute(evil);
  const out = await page.evaluate(async () => {
    const res = {};
    const post = (m) => fetch('/jsonrpc', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: m, params: {} }) });
    try {
      let r = await post('status');
      res.status = r.status + ' ' + (await r.text()).slice(0, 120);
      r = await fetch('/');
      const html = await r.text();
      res.page = r.status;
      res.token = /mnigs-token" content="[0-9a-f]+"/.test(html);
      r = await post('disconnect');
      res.disconnect = r.status + ' ' + (await r.text()).slice(0, 120);
    } catch (e) { res.error = String(e); }
    return res;
  });
  console.log('rebound page at ' + evil + ' got: ' + JSON.stringify(out));
  check(!out.error, 'the rebound page reached the node (' + (out.error || 'no browser block') + ')');
  check(out.status.startsWith('403') && !out.status.includes('"result"'), 'status refused to the rebound name');
  check(out.page === 403 && !out.token, 'the page (and its token) refused to the rebound name');
  check(out.disconnect.startsWith('403'), 'disconnect refused to the rebound name');
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    // Private Network Access would stop this fetch in chromium; other browsers (and older
    // chromium) have no such check, so the node must refuse it itself.
    ...(mode === 'rebind' ? ['--host-resolver-rules=MAP evil.example 127.0.0.1',
      '--disable-features=BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,LocalNetworkAccessChecks'] : [])],
});
let failed = false;
const page = await browser.newPage({ viewport: { width: 1200, height: 600 } });
const external = [];
page.on('request', (r) => { if (!r.url().startsWith(new URL(url).origin)) external.push(r.url()); });
page.on('pageerror', (e) => { console.error('page error: ' + e.message); failed = true; });
try {
  await ({ full, readonly, crosssite, rebind }[mode])(page);
  if (mode === 'full' || mode === 'readonly') check(external.length === 0, 'no request left the node (' + external.join(', ') + ')');
  check(!failed, 'no JavaScript errors');
} catch (e) {
  console.error(e.stack || String(e));
  await page.screenshot({ path: outdir + '/failure-' + mode + '.png', fullPage: true }).catch(() => {});
  failed = true;
}
await browser.close();
process.exit(failed ? 1 : 0);
