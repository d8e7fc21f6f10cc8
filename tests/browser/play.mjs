// hls.js in headless Chromium (Debian's chromium, driven by playwright-core) plays one URL
// through the edge from a page served on another port (so every request is cross-origin).
//
//   [UA=...] [IGNORE_TLS=1] [PAGE_TLS=CERT:KEY] node play.mjs URL [COOKIES_JSON]
//
// COOKIES_JSON: the cookies to put in the browser first (`[{name, value, domain, path}]`,
// as the admin's Set-Cookie gave them); then the page asks with credentials
// (crossorigin="use-credentials", xhr.withCredentials), as the cookie-mode seed does.
// Prints one JSON line: {"result": "played", "fragments": N} when two fragments were
// buffered into the video element's MediaSource, or {"result": "error", ...} on a fatal
// hls.js error; exits after at most 30 s either way.
import http from 'node:http';
import https from 'node:https';
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const [url, cookiesJson] = process.argv.slice(2);
const cookies = cookiesJson ? JSON.parse(cookiesJson) : [];
const credentials = cookies.length > 0;
const hlsjs = fs.readFileSync(new URL('./node_modules/hls.js/dist/hls.min.js', import.meta.url));
const html = `<!doctype html><meta charset="utf-8"><title>hlsgate player</title>
<video id="v" muted playsinline ${credentials ? 'crossorigin="use-credentials"' : ''}></video>
<script src="/hls.min.js"></script>
<script>
  window.result = null;
  const done = (r) => { if (!window.result) window.result = r; };
  const v = document.getElementById('v');
  const hls = new Hls({
    xhrSetup: (xhr) => { xhr.withCredentials = ${credentials}; },
    fetchSetup: (ctx, init) => new Request(ctx.url, { ...init, credentials: ${credentials} ? 'include' : 'same-origin' }),
  });
  let fragments = 0;
  hls.on(Hls.Events.FRAG_BUFFERED, () => { if (++fragments >= 2) done({ result: 'played', fragments }); });
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (d.fatal) done({ result: 'error', type: d.type, details: d.details, code: d.response ? d.response.code : null });
  });
  hls.loadSource(${JSON.stringify(url)});
  hls.attachMedia(v);
  v.play().catch(() => {});
</script>`;

// PAGE_TLS=CERT:KEY serves the page over HTTPS (so that an HTTPS edge on the same host is
// same-site and its cookies first-party, as on a real site).
const pageTls = process.env.PAGE_TLS ? process.env.PAGE_TLS.split(':') : null;
const serve = (handler) =>
  pageTls
    ? https.createServer({ cert: fs.readFileSync(pageTls[0]), key: fs.readFileSync(pageTls[1]) }, handler)
    : http.createServer(handler);
const server = serve((req, res) => {
  if (req.url === '/hls.min.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(hlsjs);
  } else {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pageUrl = `${pageTls ? 'https' : 'http'}://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'],
});
let out;
try {
  const context = await browser.newContext({
    ...(process.env.UA ? { userAgent: process.env.UA } : {}),
    // A test's self-signed edge certificate (IGNORE_TLS=1 only).
    ignoreHTTPSErrors: process.env.IGNORE_TLS === '1',
  });
  if (cookies.length) await context.addCookies(cookies);
  const page = await context.newPage();
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.result !== null, null, { timeout: 30000 });
  out = await page.evaluate(() => window.result);
} catch (e) {
  out = { result: 'error', details: String(e) };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify({ page: pageUrl, ...out }));
