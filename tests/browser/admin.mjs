// The admin web page in headless Chromium (Debian's chromium, driven by playwright-core),
// used the way a person would: register and log in, add a stream, play it (hls.js from
// the page, the edge on another origin) for 4 seconds of media time, look at its viewers,
// copy the playback URL, delete a stream, revoke another session, sign out; then the
// playback URL must stop working.
//
//   [UA=...] [SCREENSHOTS=DIR] node admin.mjs ADMIN_URL STREAM_URL
//
// Prints one JSON line with what happened (tests/web.rs asserts on it). Bounded: every
// wait has a timeout, the whole run at most ~90 s.
import { chromium } from 'playwright-core';
import path from 'node:path';

const [adminUrl, streamUrl] = process.argv.slice(2);
const shots = process.env.SCREENSHOTS || null;
const out = { steps: [], console: [], failedRequests: [] };
const step = (s) => out.steps.push(s);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--autoplay-policy=no-user-gesture-required'],
});
try {
  const context = await browser.newContext({
    viewport: { width: 1100, height: 900 },
    ...(process.env.UA ? { userAgent: process.env.UA } : {}),
  });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') out.console.push(m.text()); });
  page.on('pageerror', (e) => out.console.push(`pageerror: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) out.failedRequests.push(`${r.request().method()} ${r.url().replace(/\/api\/hls\/[^/]+\//, '/api/hls/<token>/')} ${r.status()}`);
  });
  // Wait until `f(arg)` (run in the page) is truthy. Polled from here: the page's CSP
  // forbids the eval that page.waitForFunction needs, as it should.
  const until = async (f, arg, timeout) => {
    const end = Date.now() + timeout;
    for (;;) {
      const v = await page.evaluate(f, arg);
      if (v) return v;
      if (Date.now() > end) throw new Error(`timed out waiting for ${f}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const shot = async (name) => {
    if (shots) await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  };

  await page.goto(adminUrl);
  await page.waitForSelector('#login-form');
  out.title = await page.title();
  await page.fill('#login-user', 'ada');
  await page.fill('#login-pass', 'correct horse battery');
  await shot('admin-login');
  await page.click('#register');
  await page.waitForSelector('#app:not([hidden])', { timeout: 10000 });
  step('logged in');

  await page.fill('#add-url', streamUrl);
  await page.click('#add-submit');
  const row = page.locator('#streams tbody tr').first();
  await row.waitFor({ timeout: 10000 });
  out.streamRow = await row.innerText();
  step('stream added');

  // Edit: another playlist of the same folder, saved, then shown.
  await row.locator('button.edit').click();
  await page.fill('#streams input.edit-url', streamUrl.replace(/index\.m3u8$/, "main.m3u8"));
  await row.locator('button.save').click();
  await until((u) => document.querySelector('#streams td.url')?.textContent === u,
    streamUrl.replace(/index\.m3u8$/, "main.m3u8"), 10000);
  step('stream edited');

  // Rules: a country rule is refused on this edge (no country database) and nothing is
  // saved; as a network rule, with the page allowed to send no Referer, it is saved and
  // shown again when the panel is reopened.
  await row.locator('button.rules').click();
  await page.click('#rules-add');
  await page.fill('#rules-table .rule-values', 'US');
  await page.click('#rules-save');
  await until(() => !document.getElementById('error').hidden, null, 5000);
  out.rulesError = await page.textContent('#error');
  await page.selectOption('#rules-table .rule-type', 'ip.src');
  await page.fill('#rules-table .rule-values', '10.0.0.0/8, 192.0.2.7');
  await page.fill('#rules-referers', 'none, *.Example.com');
  await page.click('#rules-save');
  await until(() => document.getElementById('notice').textContent.includes('saved'), null, 5000);
  await page.click('#rules-close');
  await row.locator('button.rules').click();
  out.rules = await page.evaluate(() => [...document.querySelectorAll('#rules-table tbody tr')].map((tr) => ({
    type: tr.querySelector('.rule-type').value,
    values: tr.querySelector('.rule-values').value,
    action: tr.querySelector('.rule-action').value,
  })));
  out.referers = await page.inputValue('#rules-referers');
  await shot('admin-rules');
  await page.click('#rules-close');
  step('rules saved');

  await page.locator('#streams tbody tr button.play').first().click();
  await until(() => document.getElementById('video').currentTime >= 4
      || document.getElementById('video').dataset.error, null, 45000);
  out.played = await page.evaluate(() => {
    const v = document.getElementById('video');
    return { currentTime: v.currentTime, engine: v.dataset.engine, error: v.dataset.error || null,
      width: v.videoWidth, height: v.videoHeight };
  });
  out.playbackUrl = await page.inputValue('#playback-url');
  step('played');
  await page.locator('#streams tbody tr button.viewers').first().click();
  // The edge reports viewers to the store every second; the page shows them on demand.
  const t1 = Date.now();
  while (Date.now() - t1 < 10000) {
    await page.locator('#streams tbody tr button.viewers').first().click();
    await new Promise((r) => setTimeout(r, 500));
    if (await page.locator('#viewers tbody tr').count() > 0) break;
  }
  out.viewers = await page.locator('#viewers tbody tr').count();
  await shot('admin-playing');

  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(adminUrl).origin });
  await page.locator('#streams tbody tr button.copy').first().click();
  await until(() => document.getElementById('notice').textContent.includes('copied'), null, 5000);
  out.copied = await page.evaluate(() => navigator.clipboard.readText());
  step('copied');

  // Delete: a second stream, removed with the two-click button.
  await page.fill('#add-url', streamUrl);
  await page.click('#add-submit');
  await until(() => document.querySelectorAll('#streams tbody tr').length === 2, null, 10000);
  const second = page.locator('#streams tbody tr').nth(1);
  await second.locator('button.delete').click();
  await second.locator('button.delete').click();
  await until(() => document.querySelectorAll('#streams tbody tr').length === 1, null, 10000);
  step('stream deleted');

  // Revoke: a second login of the same user (another device), ended from the page.
  const login = await fetch(new URL('/api/login', adminUrl), {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username: 'ada', password: 'correct horse battery' }),
  }).then((r) => r.json());
  const other = (path) => fetch(new URL(path, adminUrl), { headers: { Authorization: `Bearer ${login.token}` } })
    .then((r) => r.status);
  out.otherBefore = await other('/api/streams');
  await until(() => document.querySelectorAll('#sessions tbody button.danger').length === 1, null, 12000);
  await page.click('#sessions tbody button.danger');
  await until(() => document.querySelectorAll('#sessions tbody tr').length === 1, null, 10000);
  out.otherAfter = await other('/api/streams');
  step('session revoked');

  // Where the login JWT is not: storage, cookies, this page's URL.
  out.stored = await page.evaluate(() => ({
    local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
    url: location.href,
  }));
  out.cookies = (await context.cookies()).length;
  out.before = await page.evaluate((u) => fetch(u, { cache: 'no-store' })
    .then(async (r) => ({ status: r.status, body: (await r.text()).slice(0, 200) })), out.playbackUrl);

  await page.click('#signout');
  await page.waitForSelector('#login:not([hidden])', { timeout: 10000 });
  step('signed out');
  out.videoAfterSignout = await page.evaluate(() => {
    const v = document.getElementById('video');
    return { src: v.getAttribute('src'), readyState: v.readyState, hidden: document.getElementById('player').hidden };
  });
  // The playback URL stops: the edge trusts what it read about the session for at most
  // store.cache_ttl.
  const t0 = Date.now();
  for (;;) {
    out.after = await page.evaluate((u) => fetch(u, { cache: 'no-store' })
      .then(async (r) => ({ status: r.status, body: await r.text() })), out.playbackUrl);
    if (out.after.status !== 200 || Date.now() - t0 > 15000) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  out.stoppedAfterMs = Date.now() - t0;
  await shot('admin-signed-out');
  out.result = 'done';
} catch (e) {
  out.result = 'error';
  out.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
