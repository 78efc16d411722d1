// Drives luci-app-mnigs inside LuCI's real framework ($MNIGS_LUCI) in Debian's chromium, served by
// the stand-in for uhttpd/rpcd (standin.mjs) that runs the app's rpcd plugin against a real mnigs.
// Run by tests/luci.rs:
//   node browser.mjs SCENARIO.json
// SCENARIO: { mode, luci, app, plugin, path (PATH for the plugin, mnigs first), config, outdir,
//             daemonPid?, …mode-specific }. Prints one JSON object (the report) on stdout; steps
// and problems go to stderr. Exits non-zero when a step fails.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from '../browser/node_modules/playwright-core/index.mjs';
import { startStandin } from './standin.mjs';

const sc = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const report = { mode: sc.mode, steps: [], pageErrors: [], consoleErrors: [], external: [] };

function step(what, extra) {
  report.steps.push(what);
  process.stderr.write('ok   ' + what + (extra ? ' ' + JSON.stringify(extra) : '') + '\n');
}

function check(cond, what, extra) {
  if (!cond) throw new Error('check failed: ' + what + (extra !== undefined ? ' ' + JSON.stringify(extra) : ''));
  step(what);
}

async function waitFor(fn, what, ms = 30000) {
  const start = Date.now();
  let last;
  while (Date.now() - start < ms) {
    last = await fn();
    if (last) { step(what); return last; }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out: ' + what);
}

const standin = await startStandin({
  luci: sc.luci,
  app: sc.app,
  plugin: sc.plugin,
  config: sc.config,
  pluginEnv: { PATH: sc.path, MNIGS_CONFIG: sc.config },
  onApply: async () => { if (sc.daemonPid) process.kill(sc.daemonPid, 'SIGHUP'); },
});

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
page.on('pageerror', (e) => { report.pageErrors.push(e.message); process.stderr.write('page error: ' + e.message + '\n'); });
page.on('console', (m) => { if (m.type() === 'error') report.consoleErrors.push(m.text()); });
page.on('request', (r) => { if (!r.url().startsWith(standin.base)) report.external.push(r.url()); });

async function open(view) {
  await page.goto(standin.url(view));
  // The view replaces the spinner; LuCI shows a load error as .alert-message.error.
  await page.waitForFunction(() => !document.querySelector('#view .spinning'), null, { timeout: 30000 });
  const err = await page.locator('#view .alert-message.error, #view .alert-message.danger').count();
  if (err) throw new Error(view + ' failed to load: ' + await page.locator('#view').innerText());
  step('LuCI boots view ' + view);
}

async function viewText() {
  return page.locator('#view').innerText();
}

// ---- modes -------------------------------------------------------------------------------------

async function render() {
  await open('status');
  await waitFor(async () => (await page.locator('#mnigs-status table').count()) >= 2, 'status tables drawn');
  report.statusText = await viewText();
  await page.screenshot({ path: sc.outdir + '/luci-status.png', fullPage: true });
  await open('settings');
  await page.waitForSelector('.cbi-map');
  report.settingsText = await viewText();
  report.settingsTabs = await page.locator('.cbi-tabmenu li').allInnerTexts();
  await page.screenshot({ path: sc.outdir + '/luci-settings.png', fullPage: true });
}

// Opens the settings view, makes each edit { section, tab?, option, value } through the widgets,
// then presses Save & Apply and waits until the stand-in committed and LuCI confirmed.
async function edit() {
  await open('settings');
  await page.waitForSelector('.cbi-map');
  for (const e of sc.edits) {
    // A grid row (discovery) is edited in its dialog: Edit, change, the dialog's Save.
    if (e.modal) await page.locator('tr[data-sid="' + e.section + '"]').getByText('Edit').click();
    const scope = e.modal ? page.locator('.modal') : page;
    const field = scope.locator('[data-field="cbid.mnigs.' + e.section + '.' + e.option + '"]');
    const sec = page.locator('.cbi-section', { has: field }).first();
    if (e.tab) await sec.locator('ul.cbi-tabmenu li[data-tab="' + e.tab + '"] a').first().click();
    if (e.before !== undefined) {
      const shown = await field.locator('input').first().inputValue();
      check(shown === e.before, 'the form shows ' + e.section + '.' + e.option + ' = ' + e.before, shown);
    }
    await field.locator('input').first().fill(e.value);
    await field.locator('input').first().blur();
    if (e.modal) {
      await page.locator('.modal button', { hasText: 'Save' }).click();
      await page.waitForFunction(() => !document.body.classList.contains('modal-overlay-active'), null, { timeout: 10000 });
    }
    step('edited ' + e.section + '.' + e.option + ' = ' + e.value);
  }
  await page.locator('.cbi-page-actions').getByText('Save & Apply', { exact: true }).first().click();
  if (sc.expectRefusal) {
    const re = new RegExp(sc.expectRefusal);
    await waitFor(async () => re.test(await page.locator('#maincontent').innerText()), 'the daemon\'s refusal is shown: ' + sc.expectRefusal);
    await page.waitForTimeout(2000);
    check(standin.applied.length === 0, 'nothing was applied');
    report.shown = await page.locator('.alert-message').first().innerText();
    if (sc.screenshot) await page.screenshot({ path: sc.outdir + '/' + sc.screenshot, fullPage: true });
    report.checks = standin.calls.filter((c) => c.object === 'luci.mnigs' && c.method === 'check').length;
    return;
  }
  await waitFor(async () => standin.applied.length > 0, 'Save & Apply committed the changes');
  await waitFor(async () => (await page.locator('.alert-message', { hasText: 'Configuration changes applied.' }).count()) > 0
    || (await page.locator('#maincontent', { hasText: 'Configuration changes applied.' }).count()) > 0, 'LuCI confirmed the apply');
  report.committed = standin.committedChanges;
  report.checks = standin.calls.filter((c) => c.object === 'luci.mnigs' && c.method === 'check').length;
}

// The status view against a fake daemon whose every string is markup: nothing of it may run or
// become an element.
const HOSTILE = '<img src=x onerror="window.__xss=(window.__xss||0)+1">evil<script>window.__xss=(window.__xss||0)+1</script>';

function hostileAnswers() {
  const h = HOSTILE;
  const quality = { rttMs: h, loss: h, window: h, consecutiveFailures: h };
  const link = { name: h, address: h, port: h, method: h, interface: h, ipv4: h, score: h, quality, leaseLeft: h };
  return {
    status: { success: true, name: h, version: h, access: 'full', gateway: { enabled: true, methods: [h], terms: {}, uplink: {}, sessions: [] },
      subscriber: { enabled: true, state: h, lastError: h, gateway: link, standby: link, method: h, interface: h, ipv4: h, ipv6: h,
        leaseLeft: h, ranking: [{ name: h, score: h }] } },
    listGateways: { success: true, gateways: [
      { name: h, address: h, port: h, how: h, hops: h, seenAgo: h, failures: h, info: { terms: { subscribers: h, maxSubscribers: h } }, quality: { rttMs: h, loss: h } },
      { name: 'gw2', address: '10.77.0.9', port: 65533, how: h, seenAgo: 5, info: { terms: { subscribers: h, maxSubscribers: 3 } } }] },
    listSessions: { success: true, sessions: [{ name: h, address: h, method: h, ipv4: h, ipv6: h, expiresIn: h }] },
    scan: { success: false, errorMsg: h, temporaryError: false },
    disconnect: { success: true, left: h },
    connect: { success: true, gateway: h },
  };
}

async function hostile() {
  const answers = hostileAnswers();
  // Without fakePort the view runs against the real daemon of this node (sc.waitFor: what to
  // wait for before acting, e.g. a hostile gateway's name).
  const fake = !sc.fakePort ? null : createServer((req, res) => {
    let b = '';
    req.on('data', (d) => { b += d; });
    req.on('end', () => {
      let msg = {};
      try { msg = JSON.parse(b); } catch (e) {}
      const result = answers[msg.method] || { success: false, errorMsg: HOSTILE };
      // The CLI's GET / (it takes the page token from there before an action) is no call.
      if (msg.method) report.fakeCalls = (report.fakeCalls || []).concat(msg.method);
      const out = JSON.stringify({ jsonrpc: '2.0', id: msg.id, result });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out), 'Connection': 'close' });
      res.end(out);
    });
  });
  if (fake) await new Promise((r) => fake.listen(sc.fakePort, '127.0.0.1', r));
  const xssRequests = [];
  page.on('request', (r) => { if (/\/x$/.test(new URL(r.url()).pathname)) xssRequests.push(r.url()); });
  await open('status');
  await waitFor(async () => (await page.locator('#mnigs-status table').count()) >= 2, 'status view drawn from the hostile daemon');
  if (sc.waitFor) {
    const re = new RegExp(sc.waitFor);
    await waitFor(async () => re.test(await page.locator('#mnigs-status').innerText()), 'status shows ' + sc.waitFor, 60000).catch((e) => step('not shown: ' + sc.waitFor));
  }
  await page.locator('.cbi-page-actions button', { hasText: 'Scan' }).click();
  await page.locator('.cbi-page-actions button', { hasText: 'Disconnect' }).click();
  const connect = page.locator('#mnigs-status button', { hasText: 'Connect' });
  const notes = (await connect.count()) > 0 ? 3 : 2;
  if (notes === 3) await connect.first().click();
  await waitFor(async () => (await page.locator('.alert-message').count()) >= notes, notes + ' notifications shown', 90000);
  // One refresh by poll, which redraws with dom.content.
  await page.waitForTimeout(6500);
  report.text = await page.locator('#maincontent').innerText();
  report.xss = await page.evaluate(() => window.__xss || 0);
  report.elements = await page.evaluate(() => [...document.querySelectorAll('img, [onerror], script')]
    .filter((n) => n.tagName !== 'SCRIPT' || n.textContent.includes('__xss')).length);
  report.xssRequests = xssRequests;
  report.literal = report.text.split('<img src=x onerror=').length - 1;
  await page.screenshot({ path: sc.outdir + '/luci-hostile.png', fullPage: true });
  if (fake) fake.close();
}

// The status view of a live node: waits for sc.expect (regexps on the view's text), clicks the
// buttons sc.click names in order (waiting for sc.after[i] each time), takes screenshots.
async function live() {
  await open('status');
  for (const want of sc.expect || []) {
    const re = new RegExp(want);
    await waitFor(async () => re.test(await page.locator('#mnigs-status').innerText()), 'status shows ' + want, 60000)
      .catch(async (e) => { throw new Error(e.message + '; the view shows:\n' + await page.locator('#mnigs-status').innerText()); });
  }
  if (sc.chart) await waitFor(async () => (await page.locator('#mnigs-rtt-chart polyline').getAttribute('points').catch(() => '') || '').split(' ').length >= 3,
    'RTT chart has three samples', 60000);
  report.statusText = await page.locator('#mnigs-status').innerText();
  if (sc.screenshot) await page.screenshot({ path: sc.outdir + '/' + sc.screenshot, fullPage: true });
  for (const [i, c] of (sc.click || []).entries()) {
    const scope = c.inGateways ? '#mnigs-gateways button' : '.cbi-page-actions button';
    await page.locator(scope, { hasText: c.label }).first().click();
    const re = new RegExp(c.then);
    await waitFor(async () => re.test(await page.locator('#maincontent').innerText()), c.label + ' → ' + c.then, 60000);
  }
  report.finalText = await page.locator('#mnigs-status').innerText();
  if (sc.settingsScreenshot) {
    await open('settings');
    await page.waitForSelector('.cbi-map');
    await page.screenshot({ path: sc.outdir + '/' + sc.settingsScreenshot, fullPage: true });
  }
}

const modes = { render, edit, hostile, live };


let failed = false;
try {
  await modes[sc.mode]();
  check(report.external.length === 0, 'no request left the stand-in', report.external);
  check(report.pageErrors.length === 0, 'no JavaScript errors', report.pageErrors);
} catch (e) {
  process.stderr.write((e.stack || String(e)) + '\n');
  report.failure = String(e.message || e);
  await page.screenshot({ path: sc.outdir + '/luci-failure-' + sc.mode + '.png', fullPage: true }).catch(() => {});
  failed = true;
}
report.calls = standin.calls.filter((c) => c.object === 'luci.mnigs').map((c) => c.method);
report.log = standin.log.filter((l) => !l.http);
await browser.close();
await standin.close();
console.log(JSON.stringify(report));
process.exit(failed ? 1 : 0);
