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

const modes = { render };

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
