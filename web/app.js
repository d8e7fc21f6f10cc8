// The admin page: a thin client of the admin API (/api/openapi.json). The login JWT lives
// in this closure only (never in storage, a cookie or a URL), so another site cannot make
// the browser act with it (no ambient credential: nothing to forge a request with) and a
// reload signs out. Playback URLs carry their own short-lived token; they are shown and
// played, never put in this page's URL, and the page sends no Referer.
'use strict';
(() => {
  let jwt = null;
  let hls = null;
  let poll = null;
  let playing = null;
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children) e.append(c);
    return e;
  }

  function button(text, onClick, cls) {
    const b = el('button', { type: 'button', textContent: text });
    if (cls) b.className = cls;
    b.addEventListener('click', onClick);
    return b;
  }

  function showError(message) {
    const e = $('error');
    e.textContent = message || '';
    e.hidden = !message;
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (jwt) headers.Authorization = `Bearer ${jwt}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
    let data = null;
    if (r.status !== 204) {
      try { data = await r.json(); } catch (_) { data = null; }
    }
    if (r.status === 401 && jwt) {
      signedOut();
      throw new Error('Your session has ended: sign in again.');
    }
    if (!r.ok) throw new Error((data && data.error) || `${method} ${path}: HTTP ${r.status}`);
    return data;
  }

  // Run an action, showing what went wrong instead of throwing.
  const guarded = (f) => async (...args) => {
    showError('');
    try { await f(...args); } catch (e) { showError(e.message); }
  };

  // ---- sign in / out --------------------------------------------------------------------

  async function login(event) {
    event.preventDefault();
    const username = $('login-user').value.trim();
    const data = await api('POST', '/api/login', { username, password: $('login-pass').value });
    jwt = data.token;
    $('login-pass').value = '';
    $('username').textContent = username;
    $('who').hidden = false;
    $('login').hidden = true;
    $('app').hidden = false;
    await refreshAll();
    poll = setInterval(() => refreshAll().catch((e) => showError(e.message)), 5000);
  }

  async function register() {
    const username = $('login-user').value.trim();
    const password = $('login-pass').value;
    if (!username || password.length < 8) throw new Error('Choose a username and a password of at least 8 characters.');
    await api('POST', '/api/register', { username, password });
    await login(new Event('submit'));
  }

  function signedOut() {
    jwt = null;
    clearInterval(poll);
    poll = null;
    stop();
    $('who').hidden = true;
    $('app').hidden = true;
    $('login').hidden = false;
    $('viewers').hidden = true;
    $('rules').hidden = true;
    for (const t of ['streams', 'sessions', 'screens']) $(t).tBodies[0].replaceChildren();
  }

  async function signout() {
    try { await api('POST', '/api/logout'); } finally { signedOut(); }
  }

  // ---- streams --------------------------------------------------------------------------

  async function refreshAll() {
    await Promise.all([loadStreams(), loadSessions(), loadScreens()]);
    if (!$('viewers').hidden) await loadViewers($('viewers-id').textContent);
  }

  async function loadStreams() {
    const { streams } = await api('GET', '/api/streams');
    const counts = await Promise.all(streams.map((s) =>
      api('GET', `/api/viewers?streamID=${s.id}`).then((v) => v.viewers.length, () => '?')));
    const rows = streams.map((s, i) => {
      const tr = el('tr', { id: `stream-${s.id}` });
      tr.dataset.id = s.id;
      const url = el('td', { className: 'url', textContent: s.url });
      const live = el('td', { textContent: s.live ? 'live' : '—', className: s.live ? 'live' : '' });
      if (s.live) live.title = `since ${new Date(s.liveSince * 1000).toLocaleString()}`;
      const actions = el('td', { className: 'actions' },
        button('Play', guarded(() => play(s.id)), 'primary play'),
        button('Copy URL', guarded(() => copyUrl(s.id)), 'copy'),
        button('Viewers', guarded(() => loadViewers(s.id)), 'viewers'),
        button('Rules', () => openRules(s), 'rules'),
        button('Edit', () => edit(tr, s), 'edit'),
        button('Delete', (e) => confirmDelete(e.target, s.id), 'danger delete'));
      tr.append(el('td', { textContent: s.id }), url, live,
        el('td', { className: 'viewer-count', textContent: counts[i] }), actions);
      return tr;
    });
    // Keep a row being edited as it is.
    const editing = document.querySelector('#streams tr.editing');
    $('streams').tBodies[0].replaceChildren(...rows.map((r) =>
      (editing && editing.dataset.id === r.dataset.id ? editing : r)));
    $('no-streams').hidden = streams.length > 0;
  }

  async function addStream(event) {
    event.preventDefault();
    await api('POST', '/api/streams', { url: $('add-url').value.trim() });
    $('add-url').value = '';
    await loadStreams();
  }

  function edit(tr, s) {
    tr.classList.add('editing');
    const input = el('input', { type: 'url', value: s.url, size: 50, className: 'edit-url' });
    const cell = tr.querySelector('td.url');
    const save = guarded(async () => {
      await api('PUT', `/api/streams/${s.id}`, { url: input.value.trim() });
      tr.classList.remove('editing');
      await loadStreams();
    });
    const cancel = () => { tr.classList.remove('editing'); loadStreams().catch((e) => showError(e.message)); };
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') save(); if (e.key === 'Escape') cancel(); });
    cell.replaceChildren(input, ' ', button('Save', save, 'primary save'), ' ', button('Cancel', cancel));
    input.focus();
  }

  // Two clicks: the first arms the button for three seconds.
  function confirmDelete(b, id) {
    if (!b.classList.contains('armed')) {
      b.classList.add('armed');
      b.textContent = 'Really delete?';
      setTimeout(() => { b.classList.remove('armed'); b.textContent = 'Delete'; }, 3000);
      return;
    }
    guarded(async () => {
      await api('DELETE', `/api/streams/${id}`);
      if (playing === id) stop();
      await loadStreams();
    })();
  }

  // ---- where a stream may be watched ----------------------------------------------------

  const MATCHES = [['ip.geoip.country', 'Country'], ['ip.src', 'Network'], ['any', 'Anyone']];

  function ruleRow(rule) {
    const type = el('select', { className: 'rule-type' },
      ...MATCHES.map(([v, t]) => el('option', { value: v, textContent: t, selected: v === rule.type })));
    const values = el('input', { className: 'rule-values', size: 40,
      value: (rule.country || rule.ip || []).join(', ') });
    const action = el('select', { className: 'rule-action' },
      ...['allow', 'block'].map((a) => el('option', { value: a, textContent: a, selected: a === rule.action })));
    const sync = () => { values.disabled = type.value === 'any'; };
    type.addEventListener('change', sync);
    sync();
    const tr = el('tr', {}, el('td', {}, type), el('td', {}, values), el('td', {}, action));
    tr.append(el('td', {}, button('Remove', () => tr.remove(), 'danger remove-rule')));
    return tr;
  }

  function openRules(s) {
    $('rules-id').textContent = s.id;
    $('rules').dataset.id = s.id;
    $('rules-table').tBodies[0].replaceChildren(...(s.accessRules || []).map(ruleRow));
    $('rules-referers').value = (s.referers || []).join(', ');
    $('rules').hidden = false;
  }

  function readRules() {
    const split = (text) => text.split(',').map((v) => v.trim()).filter((v) => v);
    return [...$('rules-table').tBodies[0].rows].map((tr) => {
      const type = tr.querySelector('.rule-type').value;
      const rule = { type, action: tr.querySelector('.rule-action').value };
      const values = split(tr.querySelector('.rule-values').value);
      if (type === 'ip.src') rule.ip = values;
      if (type === 'ip.geoip.country') rule.country = values;
      return rule;
    });
  }

  async function saveRules(event) {
    event.preventDefault();
    const id = $('rules').dataset.id;
    const referers = $('rules-referers').value.split(',').map((v) => v.trim()).filter((v) => v);
    const s = await api('PUT', `/api/streams/${id}`, { accessRules: readRules(), referers });
    openRules(s);
    $('notice').textContent = `Rules of stream ${id} saved.`;
    setTimeout(() => { $('notice').textContent = ''; }, 4000);
    await loadStreams();
  }

  // ---- playback -------------------------------------------------------------------------

  // A playback URL for this browser (bound to its address and User-Agent).
  async function playbackUrl(id) {
    const { url } = await api('GET', `/api/stream?streamID=${id}`);
    return url;
  }

  async function copyUrl(id) {
    const url = await playbackUrl(id);
    $('playback-url').value = url;
    await copy(url);
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      $('playback-url').select();
      document.execCommand('copy');
    }
    $('notice').textContent = 'Playback URL copied.';
    setTimeout(() => { $('notice').textContent = ''; }, 4000);
  }

  async function play(id) {
    stop();
    const url = await playbackUrl(id);
    const video = $('video');
    playing = id;
    $('playing-id').textContent = id;
    $('playback-url').value = url;
    $('player').hidden = false;
    const state = $('play-state');
    state.textContent = 'Loading…';
    if (window.Hls && Hls.isSupported()) {
      hls = new Hls({ enableWorker: true, lowLatencyMode: true });
      hls.on(Hls.Events.ERROR, (_, d) => {
        if (d.fatal) {
          const code = d.response && d.response.code ? ` (HTTP ${d.response.code})` : '';
          state.textContent = `Playback failed: ${d.details}${code}`;
          video.dataset.error = d.details;
        }
      });
      hls.loadSource(url);
      hls.attachMedia(video);
      video.dataset.engine = 'hls.js';
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url; // Safari, iOS: the browser's own HLS
      video.dataset.engine = 'native';
    } else {
      throw new Error('This browser plays neither HLS nor Media Source Extensions.');
    }
    video.play().catch(() => { state.textContent = 'Press play.'; });
  }

  function stop() {
    const video = $('video');
    if (hls) { hls.destroy(); hls = null; }
    video.pause();
    video.removeAttribute('src');
    video.load();
    delete video.dataset.error;
    playing = null;
    $('player').hidden = true;
    $('playback-url').value = '';
  }

  function onTime() {
    const v = $('video');
    if (playing !== null && v.currentTime > 0) {
      $('play-state').textContent = `Playing: ${v.currentTime.toFixed(1)} s`;
    }
  }

  // ---- viewers and sessions -------------------------------------------------------------

  async function loadViewers(id) {
    const { viewers } = await api('GET', `/api/viewers?streamID=${id}`);
    $('viewers-id').textContent = id;
    $('viewers').hidden = false;
    $('no-viewers').hidden = viewers.length > 0;
    $('viewers').querySelector('tbody').replaceChildren(...viewers.map((v) => el('tr', {},
      el('td', { textContent: v.id.slice(0, 8) }), el('td', { textContent: v.ip }),
      el('td', { textContent: v.userAgent }), el('td', { textContent: v.edge }),
      el('td', { textContent: v.bytes }),
      el('td', {}, button('End', guarded(async () => {
        await api('DELETE', `/api/viewers/${v.id}`);
        await loadViewers(id);
      }), 'danger')))));
  }

  async function loadScreens() {
    const s = await api('GET', '/api/screens');
    $('screens-limit').textContent = s.max > 0
      ? `(${s.screens.length} of ${s.max} in use; ${s.whenFull === 'end_oldest' ? 'a new one ends the oldest' : 'more are refused'})`
      : '(no limit)';
    const row = (v, state) => el('tr', {},
      el('td', { textContent: v.id.slice(0, 8) }), el('td', { textContent: v.streamID }),
      el('td', { textContent: v.ip }), el('td', { textContent: v.userAgent }),
      el('td', { textContent: v.edge }), el('td', { textContent: state }));
    $('screens').tBodies[0].replaceChildren(...s.screens.map((v) => row(v, 'playing')),
      ...s.ended.map((v) => row(v, v.endedReason === 'screens' ? 'ended: a newer screen took its place' : 'ended')));
  }

  async function loadSessions() {
    const { sessions } = await api('GET', '/api/sessions');
    $('sessions').tBodies[0].replaceChildren(...sessions.map((s) => el('tr', {},
      el('td', { textContent: new Date(s.createdAt * 1000).toLocaleString() }),
      el('td', { textContent: new Date(s.expiresAt * 1000).toLocaleString() }),
      el('td', { textContent: s.ip }), el('td', { textContent: s.userAgent }),
      el('td', {}, s.current
        ? el('span', { textContent: 'this browser' })
        : button('Revoke', guarded(async () => {
          await api('DELETE', `/api/sessions/${s.id}`);
          await loadSessions();
        }), 'danger')))));
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', guarded(login));
    $('register').addEventListener('click', guarded(register));
    $('signout').addEventListener('click', guarded(signout));
    $('add-form').addEventListener('submit', guarded(addStream));
    $('stop').addEventListener('click', stop);
    $('copy-url').addEventListener('click', guarded(() => copy($('playback-url').value)));
    $('video').addEventListener('timeupdate', onTime);
    $('rules-add').addEventListener('click', () => $('rules-table').tBodies[0].append(ruleRow({ type: 'ip.geoip.country', action: 'block' })));
    $('rules-form').addEventListener('submit', guarded(saveRules));
    $('rules-close').addEventListener('click', () => { $('rules').hidden = true; });
  });
})();
