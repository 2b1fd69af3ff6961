// bazaar ops console. Plain JS, no framework, no build step. Every string from the
// server reaches the page as a text node (textContent / createTextNode), never as
// markup; positions and colours are set through the CSSOM, which the page's CSP allows.
'use strict';

(() => {
  const TOKEN_KEY = 'bazaar.console.token';
  const RENEW_KEY = 'bazaar.console.refresh';
  const REFRESH_MS = 5000;
  const RATE_MS = 2000;
  const RATE_POINTS = 60;
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let renewal = sessionStorage.getItem(RENEW_KEY);
  let renewing = null;
  let timers = [];
  let refreshing = false;
  let selectedTrace = null;
  let rateSamples = [];
  let lastCounters = null;

  // ---- DOM helpers: elements from data, text always as text -------------------------

  function build(make, tag, attrs, children) {
    const el = make(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.setAttribute('class', value);
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const h = (tag, attrs, ...children) => build((t) => document.createElement(t), tag, attrs, children);
  const s = (tag, attrs, ...children) => build((t) => document.createElementNS(SVG_NS, t), tag, attrs, children);

  function show(id, ...nodes) {
    $(id).replaceChildren(...nodes.flat(Infinity).filter((n) => n));
  }

  const note = (text, cls) => h('p', { class: cls || 'muted' }, text);
  const fmtMs = (ms) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)) + ' ms';
  const fmtSecs = (secs) => (secs >= 3600 ? (secs / 3600).toFixed(1) + ' h'
    : secs >= 60 ? (secs / 60).toFixed(1) + ' min' : secs.toFixed(1) + ' s');
  const time = (rfc3339) => {
    const d = new Date(rfc3339);
    return isNaN(d) ? String(rfc3339) : d.toLocaleTimeString([], { hour12: false });
  };
  const table = (head, rows) => h('table', {},
    h('thead', {}, h('tr', {}, head.map(([label, cls]) => h('th', { class: cls }, label)))),
    h('tbody', {}, rows));

  // One colour per service, stable across panels.
  const COLOURS = {
    gateway: '#6b7280', bazaar: '#475569', identity: '#8e44ad', catalog: '#1f77b4',
    cart: '#17a2b8', orders: '#ff7f0e', payments: '#2ca02c', notifications: '#bcbd22',
    analytics: '#9467bd',
  };
  const PALETTE = ['#e377c2', '#8c564b', '#7f7f7f', '#17becf', '#d62728', '#aec7e8'];
  function colour(service) {
    if (COLOURS[service]) return COLOURS[service];
    let hash = 0;
    for (const c of String(service)) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
    return PALETTE[hash % PALETTE.length];
  }
  function dot(service) {
    const d = h('span', { class: 'svc-dot' });
    d.style.background = colour(service);
    return d;
  }

  // ---- API ------------------------------------------------------------------------

  class Unavailable extends Error {}

  function keep(session) {
    token = session.token;
    renewal = session.refresh_token || null;
    sessionStorage.setItem(TOKEN_KEY, token);
    if (renewal) sessionStorage.setItem(RENEW_KEY, renewal); else sessionStorage.removeItem(RENEW_KEY);
  }

  // Access tokens are short-lived: trade the refresh token for a new pair. One
  // exchange at a time, shared by every panel that needs it: a refresh token is single
  // use, and a second use would end the session.
  function renew() {
    if (!renewal) return Promise.resolve(false);
    if (!renewing) {
      renewing = (async () => {
        try {
          const response = await fetch('/api/v1/auth/refresh', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
            body: JSON.stringify({ refresh_token: renewal }),
          });
          const body = await response.json().catch(() => null);
          if (!response.ok || !body || !body.token) return false;
          keep(body);
          return true;
        } catch (e) {
          return false;
        }
      })().finally(() => { renewing = null; });
    }
    return renewing;
  }

  // GET an admin endpoint with the token. A 401 renews the token once; 401/403 then
  // end the session; 404 means the server has no such endpoint (`null`); other
  // failures throw for the panel to show.
  async function api(path, renewed) {
    const sent = token;
    const response = await fetch(path, { headers: { Authorization: 'Bearer ' + sent, Accept: 'application/json' } });
    if (response.status === 401) {
      // Another panel may have renewed it meanwhile.
      if (!renewed && (token !== sent || await renew())) return api(path, true);
      signOut('Your session has expired: sign in again.');
      throw new Unavailable('signed out');
    }
    if (response.status === 403) { signOut('This account is not an administrator.'); throw new Unavailable('forbidden'); }
    if (response.status === 404) return null;
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Unavailable((body && (body.detail || body.title)) || ('HTTP ' + response.status));
    }
    return body;
  }

  // ---- sign in / out --------------------------------------------------------------

  function signOut(message) {
    if (token) {
      // Ends the session server-side too (its refresh tokens); best effort.
      fetch('/api/v1/auth/logout', { method: 'POST', headers: { Authorization: 'Bearer ' + token } }).catch(() => {});
    }
    token = null;
    renewal = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(RENEW_KEY);
    timers.forEach(clearInterval);
    timers = [];
    $('console').hidden = true;
    $('sign-out').hidden = true;
    $('who').textContent = '';
    $('updated').textContent = '';
    $('topology').textContent = '';
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('email').focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const error = $('login-error');
    error.textContent = '';
    const email = $('email').value.trim();
    const password = $('password').value;
    if (!email || !password) { error.textContent = 'Enter your email and password.'; return; }
    $('sign-in').disabled = true;
    try {
      const response = await fetch('/api/v1/auth/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ email, password }),
      });
      const body = await response.json().catch(() => null);
      if (response.status === 401) { error.textContent = 'Wrong email or password.'; return; }
      if (!response.ok || !body || !body.token) {
        error.textContent = 'Sign-in failed: ' + ((body && (body.detail || body.title)) || ('HTTP ' + response.status));
        return;
      }
      if (!body.user || body.user.role !== 'admin') {
        error.textContent = 'Access denied: ' + email + ' is not an administrator. The console is for admins only.';
        return;
      }
      keep(body);
      $('password').value = '';
      start(body.user);
    } catch (e) {
      error.textContent = 'Sign-in failed: ' + e.message;
    } finally {
      $('sign-in').disabled = false;
    }
  }

  function start(user) {
    $('login').hidden = true;
    $('console').hidden = false;
    $('sign-out').hidden = false;
    $('who').textContent = user.email || '';
    refresh();
    sampleRate();
    timers.push(setInterval(refresh, REFRESH_MS), setInterval(sampleRate, RATE_MS));
  }

  // A token kept from earlier in this tab is used if it still belongs to an admin.
  async function resume() {
    if (!token) { signOut(''); return; }
    try {
      let response = await fetch('/api/v1/me', { headers: { Authorization: 'Bearer ' + token } });
      if (response.status === 401 && await renew()) {
        response = await fetch('/api/v1/me', { headers: { Authorization: 'Bearer ' + token } });
      }
      const user = response.ok ? await response.json() : null;
      if (user && user.role === 'admin') start(user);
      else signOut(user ? 'This account is not an administrator.' : '');
    } catch (e) {
      signOut('Cannot reach the server: ' + e.message);
    }
  }

  // ---- refresh --------------------------------------------------------------------

  async function panel(id, load) {
    try {
      await load();
    } catch (e) {
      if (!(e instanceof Unavailable && (e.message === 'signed out' || e.message === 'forbidden'))) {
        show(id, note('Unavailable: ' + e.message, 'error'));
      }
    }
  }

  async function refresh() {
    if (refreshing || !token) return;
    refreshing = true;
    try {
      await Promise.all([
        panel('map', loadMap),
        panel('traces', loadTraces),
        panel('sagas', loadSagas),
        panel('bus', loadBus),
        panel('dead', loadDeadLetters),
      ]);
      if (token) $('updated').textContent = 'updated ' + new Date().toLocaleTimeString([], { hour12: false });
    } finally {
      refreshing = false;
    }
  }

  // ---- service map ----------------------------------------------------------------

  const BREAKER_RANK = { none: 0, closed: 1, half_open: 2, open: 3 };

  // The breaker guarding `from` -> `to`: the worst state among the breakers named
  // `to` that `from` holds (split: items say their `service`; monolith: one shared
  // breaker per called module, no `service`).
  function breaker(dependencies, from, to) {
    let state = 'none';
    for (const d of dependencies) {
      if (d.name !== to || (d.service && d.service !== from)) continue;
      if (BREAKER_RANK[d.breaker] > BREAKER_RANK[state]) state = d.breaker;
    }
    return state;
  }

  // Columns by the longest call path from the gateway, so every call goes rightwards.
  function layout(services) {
    const byName = new Map(services.map((svc) => [svc.name, svc]));
    const depth = new Map();
    const visit = (name, d, seen) => {
      if (seen.has(name) || d > services.length) return;
      if ((depth.get(name) ?? -1) >= d) return;
      depth.set(name, d);
      const svc = byName.get(name);
      for (const callee of (svc && svc.calls) || []) visit(callee, d + 1, new Set([...seen, name]));
    };
    const roots = services.filter((svc) => !services.some((o) => (o.calls || []).includes(svc.name)));
    roots.forEach((root) => visit(root.name, 0, new Set()));
    services.forEach((svc) => { if (!depth.has(svc.name)) depth.set(svc.name, 1); });
    const columns = [];
    for (const svc of services) {
      const d = depth.get(svc.name);
      (columns[d] = columns[d] || []).push(svc);
    }
    return columns.filter(Boolean);
  }

  async function loadMap() {
    const [list, resilience] = await Promise.all([
      api('/api/v1/admin/services'),
      api('/api/v1/admin/resilience').catch(() => null),
    ]);
    if (!list) { show('map', note('This server has no service list.')); show('services'); return; }
    const services = list.items || [];
    const dependencies = (resilience && resilience.items) || [];
    $('topology').textContent = list.topology || '';

    const W = 160, H = 46, GAP_X = 80, GAP_Y = 22, PAD = 12;
    const columns = layout(services);
    const col = new Map();
    columns.forEach((column, ci) => column.forEach((svc) => col.set(svc.name, ci)));
    // Calls that skip a column run in lanes above the nodes, one lane each.
    const long = [];
    for (const svc of services) {
      for (const callee of svc.calls || []) {
        if (col.has(callee) && col.get(callee) !== col.get(svc.name) + 1) long.push(svc.name + '>' + callee);
      }
    }
    const LANE_GAP = 8;
    const top = PAD + long.length * LANE_GAP + 10;
    const rows = Math.max(1, ...columns.map((c) => c.length));
    const width = PAD * 2 + columns.length * W + (columns.length - 1) * GAP_X;
    const height = top + rows * H + (rows - 1) * GAP_Y + PAD;
    const pos = new Map();
    columns.forEach((column, ci) => {
      column.forEach((svc, ri) => pos.set(svc.name, { col: ci, x: PAD + ci * (W + GAP_X), y: top + ri * (H + GAP_Y) }));
    });

    const markers = ['closed', 'half_open', 'open', 'none'].map((state) =>
      s('marker', { id: 'arrow-' + state, class: state, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z' })));
    const edges = [];
    const labels = [];
    for (const svc of services) {
      const from = pos.get(svc.name);
      for (const callee of svc.calls || []) {
        const to = pos.get(callee);
        if (!from || !to) continue;
        const state = svc.name === 'gateway' ? 'none' : breaker(dependencies, svc.name, callee);
        let d, mid;
        const lane = long.indexOf(svc.name + '>' + callee);
        if (lane < 0) {
          const [x1, y1, x2, y2] = [from.x + W, from.y + H / 2, to.x, to.y + H / 2];
          d = `M${x1},${y1} C${x1 + GAP_X / 2},${y1} ${x2 - GAP_X / 2},${y2} ${x2},${y2}`;
          mid = [(x1 + x2) / 2, (y1 + y2) / 2 - 4];
        } else {
          // Right into the gap, up to its lane, across, and down onto the callee.
          const [x1, y1, x2, y2] = [from.x + W, from.y + H / 2, to.x + W / 2 + (lane % 3) * 10, to.y];
          const gx = x1 + 12 + (lane % 4) * 6;
          const ly = PAD + lane * LANE_GAP;
          const r = 6;
          d = `M${x1},${y1} L${gx - r},${y1} Q${gx},${y1} ${gx},${y1 - r} L${gx},${ly + r} Q${gx},${ly} ${gx + r},${ly} ` +
            `L${x2 - r},${ly} Q${x2},${ly} ${x2},${ly + r} L${x2},${y2}`;
          mid = [(gx + x2) / 2, ly - 3];
        }
        edges.push(s('path', { class: 'edge ' + state, d, 'marker-end': `url(#arrow-${state})` },
          s('title', {}, `${svc.name} calls ${callee}: breaker ${state === 'none' ? 'n/a' : state}`)));
        if (state === 'open' || state === 'half_open') {
          labels.push(s('text', { class: 'edge-label ' + state, x: mid[0], y: mid[1], 'text-anchor': 'middle' },
            state.replace('_', '-')));
        }
      }
    }
    const nodes = services.map((svc) => {
      const p = pos.get(svc.name);
      const health = svc.ready === true ? 'ready' : svc.ready === false ? 'down' : 'unknown';
      const where = svc.location === 'in-process' ? 'in process' : String(svc.location || '').replace(/^https?:\/\//, '');
      return s('g', { class: 'node ' + health, transform: `translate(${p.x},${p.y})` },
        s('title', {}, `${svc.name}: ${health === 'ready' ? 'ready' : 'NOT READY'} (${svc.location})`),
        s('rect', { width: W, height: H, rx: 7 }),
        s('circle', { cx: 14, cy: 16, r: 5, fill: colour(svc.name) }),
        s('text', { x: 25, y: 20 }, svc.name),
        s('text', { class: 'sub', x: 12, y: 36 }, (health === 'ready' ? '' : 'not ready · ') + where));
    });
    show('map', s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'service map' },
      s('defs', {}, markers), edges, nodes, labels));

    const legend = h('div', { class: 'legend' },
      [['closed', 'breaker closed'], ['half_open', 'half-open'], ['open', 'open'], ['none', 'no breaker']]
        .map(([cls, label]) => h('span', {}, h('span', { class: 'sw ' + cls }), label)));
    const rowsOut = services.map((svc) => {
      const guards = (svc.calls || []).filter(() => svc.name !== 'gateway')
        .map((callee) => `${callee}: ${breaker(dependencies, svc.name, callee).replace('_', '-')}`);
      return h('tr', {},
        h('td', {}, dot(svc.name), svc.name),
        h('td', { class: 'mono' }, svc.location),
        h('td', { class: svc.ready ? 'ok' : 'bad' }, svc.ready ? 'ready' : 'not ready'),
        h('td', { class: 'small' }, guards.join(', ') || '—'),
        h('td', { class: 'small' }, (svc.consumes || []).join(', ') || '—'),
        h('td', { class: 'small bad' }, svc.ready ? '' : describe(svc.detail)));
    });
    show('services', legend, table([['Service'], ['Location'], ['Health'], ['Breakers of its calls'], ['Events from'], ['']], rowsOut));
  }

  // What a readiness detail says went wrong, in one line.
  function describe(detail) {
    if (!detail || typeof detail !== 'object') return String(detail ?? '');
    if (detail.error) return String(detail.error);
    if (detail.checks && typeof detail.checks === 'object') {
      return Object.entries(detail.checks).filter(([, v]) => v !== 'ok').map(([k, v]) => `${k}: ${v}`).join('; ');
    }
    return JSON.stringify(detail);
  }

  // ---- traces ---------------------------------------------------------------------

  // Root spans of operators' own requests (this page's polling among them), hidden
  // unless asked for: they would push the shop's traces off the list.
  const OPS_TRACE = / (\/api\/v1\/admin\/|\/metrics|\/health\/|\/console|\/docs|\/openapi\.json)/;

  async function loadTraces() {
    const list = await api('/api/v1/admin/traces?limit=200');
    if (!list) { show('traces', note('Tracing is not available on this server.')); return; }
    const withOps = $('traces-ops').checked;
    const items = (list.items || []).filter((t) => withOps || !OPS_TRACE.test(' ' + t.name)).slice(0, 25);
    if (!items.length) { show('traces', note('No traces yet.')); return; }
    const rows = items.map((t) => h('tr', {
      class: t.trace_id === selectedTrace ? 'selected' : null,
      'data-trace': t.trace_id,
      title: t.trace_id,
      onclick: () => openTrace(t.trace_id),
    },
    h('td', { class: 'mono' }, time(t.started_at)),
    h('td', { class: t.error ? 'bad' : null }, t.name, t.error ? ' ✖' : ''),
    h('td', { class: 'dots', title: (t.services || []).join(', ') }, (t.services || []).map(dot)),
    h('td', { class: 'num' }, fmtMs(Number(t.duration_ms) || 0)),
    h('td', { class: 'num' }, String(t.spans ?? ''))));
    show('traces', table([['Time'], ['Root span'], ['Services'], ['Duration', 'num'], ['Spans', 'num']], rows));
  }

  async function openTrace(traceId) {
    selectedTrace = traceId;
    for (const tr of document.querySelectorAll('#traces tbody tr')) {
      tr.classList.toggle('selected', tr.dataset.trace === traceId);
    }
    show('waterfall', note('Loading trace ' + traceId + '…'));
    try {
      const trace = await api('/api/v1/admin/traces/' + encodeURIComponent(traceId));
      if (selectedTrace !== traceId) return;
      if (!trace) { show('waterfall', note('Trace ' + traceId + ' is no longer kept.')); return; }
      drawWaterfall(trace);
    } catch (e) {
      if (selectedTrace === traceId) show('waterfall', note('Unavailable: ' + e.message, 'error'));
    }
  }

  // Spans depth first from the roots (spans whose parent is not in the trace), each
  // with its depth.
  function ordered(spans) {
    const ids = new Set(spans.map((sp) => sp.span_id));
    const children = new Map();
    const roots = [];
    for (const sp of spans) {
      if (sp.parent_span_id && ids.has(sp.parent_span_id) && sp.parent_span_id !== sp.span_id) {
        if (!children.has(sp.parent_span_id)) children.set(sp.parent_span_id, []);
        children.get(sp.parent_span_id).push(sp);
      } else {
        roots.push(sp);
      }
    }
    const out = [];
    const seen = new Set();
    const walk = (sp, depth) => {
      if (seen.has(sp.span_id)) return;
      seen.add(sp.span_id);
      out.push([sp, depth]);
      (children.get(sp.span_id) || []).sort((a, b) => a.start_unix_us - b.start_unix_us).forEach((c) => walk(c, depth + 1));
    };
    roots.sort((a, b) => a.start_unix_us - b.start_unix_us).forEach((r) => walk(r, 0));
    return out;
  }

  function drawWaterfall(trace) {
    const spans = (trace.spans || []).filter((sp) => Number.isFinite(sp.start_unix_us));
    if (!spans.length) { show('waterfall', note('This trace has no spans.')); return; }
    const start = Math.min(...spans.map((sp) => sp.start_unix_us));
    const end = Math.max(...spans.map((sp) => sp.start_unix_us + (sp.duration_us || 0)));
    const total = Math.max(1, end - start);
    const services = [...new Set(spans.map((sp) => sp.service))];
    const detail = h('div', { class: 'wf-detail' });

    const rows = ordered(spans).map(([sp, depth]) => {
      const failed = sp.status === 'error';
      const bar = h('div', { class: 'wf-bar' + (failed ? ' error' : '') });
      bar.style.left = ((sp.start_unix_us - start) / total * 100) + '%';
      bar.style.width = ((sp.duration_us || 0) / total * 100) + '%';
      bar.style.background = colour(sp.service);
      const label = h('div', { class: 'wf-label', title: `${sp.service}: ${sp.name}` },
        h('span', { class: 'svc' }, sp.service + ': '), sp.name);
      label.style.paddingLeft = (depth * 14) + 'px';
      return h('div', { class: 'wf-row' + (failed ? ' error' : ''), onclick: () => showSpan(detail, sp, start) },
        label, h('div', { class: 'wf-track' }, bar), h('div', { class: 'wf-dur' }, fmtMs((sp.duration_us || 0) / 1000)));
    });
    const errors = spans.filter((sp) => sp.status === 'error').length;
    show('waterfall',
      h('p', { class: 'small' },
        h('span', { class: 'mono' }, trace.trace_id), ' · ', fmtMs(total / 1000), ' · ',
        `${spans.length} spans`, errors ? h('span', { class: 'bad' }, ` · ${errors} failed`) : '', ' · ',
        services.map((svc) => h('span', { class: 'chip' }, dot(svc), svc))),
      h('div', { class: 'waterfall', id: 'waterfall-rows' },
        h('div', { class: 'wf-row head' }, h('div', {}, 'service: span'), h('div', {}, '0 — ' + fmtMs(total / 1000)), h('div', { class: 'wf-dur' }, 'duration')),
        rows),
      detail);
  }

  function showSpan(target, sp, traceStart) {
    const attrs = Object.entries(sp.attributes || {});
    target.replaceChildren(
      h('strong', {}, `${sp.service}: ${sp.name}`),
      table([['Field'], ['Value']], [
        ['kind', sp.kind], ['status', sp.status], ['span id', sp.span_id], ['parent', sp.parent_span_id || '—'],
        ['starts at', '+' + fmtMs((sp.start_unix_us - traceStart) / 1000)], ['duration', fmtMs((sp.duration_us || 0) / 1000)],
        ...attrs.map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
        ...(sp.links || []).map((l) => ['link', `${l.trace_id} / ${l.span_id}`]),
      ].map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'mono' }, String(v ?? ''))))));
  }

  // ---- sagas ----------------------------------------------------------------------

  async function loadSagas() {
    const report = await api('/api/v1/admin/sagas');
    if (!report) { show('sagas', note('Saga states are not available on this server.')); return; }
    const tile = (k, n, bad) => h('div', { class: 'tile' + (bad ? ' bad' : '') }, h('div', { class: 'n' }, String(n)), h('div', { class: 'k' }, k));
    const statuses = Object.entries(report.by_status || {}).map(([k, n]) => tile(k, n, k === 'failed' && n > 0));
    const steps = Object.entries(report.by_step || {}).filter(([, n]) => n > 0)
      .map(([k, n]) => h('span', { class: 'chip' }, `${k}: ${n}`));
    const stuck = report.stuck || [];
    show('sagas',
      h('div', { class: 'tiles' }, statuses, tile('open sagas', report.open ?? 0, false)),
      h('p', { class: 'small' }, 'Open sagas by next step: ', steps.length ? steps : h('span', { class: 'muted' }, 'none')),
      stuck.length
        ? [h('p', { class: 'bad small' }, `${stuck.length} stuck (no event for ${report.stuck_after_secs} s):`),
          table([['Order'], ['Step'], ['Idle', 'num'], ['Last event']], stuck.map((o) => h('tr', { title: o.id },
            h('td', { class: 'mono' }, String(o.id).slice(-12)),
            h('td', {}, o.step || '—'),
            h('td', { class: 'num' }, fmtSecs(o.idle_secs || 0)),
            h('td', {}, o.last_event ? `${o.last_event.type} at ${time(o.last_event.occurred_at)}` : '—'))))]
        : h('p', { class: 'ok small' }, `No stuck orders (none idle for ${report.stuck_after_secs ?? '?'} s).`));
  }

  // ---- outbox and consumers -------------------------------------------------------

  async function loadBus() {
    const bus = await api('/api/v1/admin/bus');
    if (!bus) { show('bus', note('Outbox and consumer lag are not available on this server.')); return; }
    const items = bus.items || [];
    if (!items.length) { show('bus', note('No outbox or consumer reported.')); return; }
    const rows = [];
    for (const svc of items) {
      const backlog = Number(svc.outbox_backlog) || 0;
      rows.push(h('tr', {},
        h('td', {}, dot(svc.service), svc.service, h('span', { class: 'muted small' }, ' outbox')),
        h('td', { class: 'num' + (backlog > 0 ? ' warn' : '') }, String(backlog)),
        h('td', { class: 'num' }, fmtSecs(Number(svc.outbox_oldest_unsent_age_seconds) || 0)),
        h('td', {}), h('td', {})));
      for (const c of svc.consumers || []) {
        rows.push(h('tr', {},
          h('td', {}, '↳ ', c.name),
          h('td', { class: 'num' + ((Number(c.lag) || 0) > 0 ? ' warn' : '') }, String(c.lag ?? '—')),
          h('td', {}),
          h('td', { class: 'num' }, String(c.redeliveries ?? '—')),
          h('td', { class: 'num' + ((Number(c.dead_letters) || 0) > 0 ? ' bad' : '') }, String(c.dead_letters ?? '—'))));
      }
    }
    show('bus', table([['Outbox / consumer'], ['Backlog / lag', 'num'], ['Oldest unsent', 'num'], ['Redelivered', 'num'], ['Dead', 'num']], rows));
  }

  // ---- dead letters ---------------------------------------------------------------

  async function loadDeadLetters() {
    const list = await api('/api/v1/admin/dead-letters');
    if (!list) { show('dead', note('Dead letters are not available on this server.')); return; }
    const items = list.items || [];
    const unreachable = (list.unavailable || []).length
      ? note('Not answering: ' + list.unavailable.join(', '), 'warn small') : null;
    if (!items.length) { show('dead', h('p', { class: 'ok' }, 'No dead letters.'), unreachable); return; }
    show('dead',
      h('p', { class: 'bad' }, `${items.length} dead letter${items.length === 1 ? '' : 's'}`),
      unreachable,
      table([['Failed'], ['Consumer'], ['Topic'], ['Tries', 'num'], ['Error']], items.slice(0, 15).map((d) => h('tr', { title: d.event_id },
        h('td', { class: 'mono' }, time(d.failed_at)),
        h('td', {}, d.consumer),
        h('td', { class: 'mono' }, d.topic),
        h('td', { class: 'num' }, String(d.attempts ?? '')),
        h('td', { class: 'small' }, String(d.error || '').slice(0, 160))))));
  }

  // ---- live request rate ----------------------------------------------------------

  // Routes that are the console's and the operators' own traffic, not the shop's.
  const OPS_ROUTE = /^(\/metrics|\/health\/|\/console|\/docs|\/openapi\.json|\/api\/v1\/admin\/)/;

  // Sums `http_requests_total` over API routes: all requests, and 5xx answers.
  function counters(text) {
    let all = 0, errors = 0;
    for (const line of text.split('\n')) {
      if (!line.startsWith('http_requests_total{')) continue;
      const close = line.lastIndexOf('}');
      const labels = line.slice(0, close);
      const value = Number(line.slice(close + 1).trim().split(/\s+/)[0]);
      const route = /route="([^"]*)"/.exec(labels);
      const status = /status="([^"]*)"/.exec(labels);
      if (!Number.isFinite(value) || (route && OPS_ROUTE.test(route[1]))) continue;
      all += value;
      if (status && status[1].startsWith('5')) errors += value;
    }
    return { all, errors, at: performance.now() };
  }

  async function sampleRate() {
    if (!token) return;
    try {
      const response = await fetch('/metrics', { headers: { Authorization: 'Bearer ' + token } });
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const now = counters(await response.text());
      if (lastCounters && now.all >= lastCounters.all) {
        const secs = Math.max(0.001, (now.at - lastCounters.at) / 1000);
        rateSamples.push({ rps: (now.all - lastCounters.all) / secs, eps: (now.errors - lastCounters.errors) / secs });
        rateSamples = rateSamples.slice(-RATE_POINTS);
      }
      lastCounters = now;
      drawRate();
    } catch (e) {
      show('rate', note('Unavailable: ' + e.message, 'error'));
    }
  }

  function drawRate() {
    if (!rateSamples.length) { show('rate', note('Measuring…')); return; }
    const last = rateSamples[rateSamples.length - 1];
    const W = 300, H = 70;
    const max = Math.max(1, ...rateSamples.map((p) => p.rps));
    const step = W / Math.max(1, rateSamples.length - 1);
    const points = (key) => rateSamples.map((p, i) =>
      `${(i * step).toFixed(1)},${(H - 2 - p[key] / max * (H - 4)).toFixed(1)}`).join(' ');
    const anyErrors = rateSamples.some((p) => p.eps > 0);
    show('rate',
      h('div', {}, h('span', { class: 'big' }, last.rps.toFixed(1)), ' requests/s'),
      h('div', { class: 'small ' + (last.eps > 0 ? 'bad' : 'muted') }, `${last.eps.toFixed(2)} 5xx/s · peak ${max.toFixed(1)}/s over the last ${Math.round(rateSamples.length * RATE_MS / 1000)} s`),
      s('svg', { class: 'spark', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': 'request rate sparkline' },
        s('line', { x1: 0, y1: H - 1, x2: W, y2: H - 1 }),
        s('polyline', { points: points('rps') }),
        anyErrors ? s('polyline', { class: 'err', points: points('eps') }) : null));
  }

  // ---- wiring ---------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut('Signed out.'));
    $('traces-ops').addEventListener('change', () => panel('traces', loadTraces));
    // A busy shop pushes a trace off the recent list in seconds; its id (every log
    // line carries one) still opens it while the process keeps its spans.
    $('trace-open').addEventListener('submit', (event) => {
      event.preventDefault();
      const id = $('trace-id').value.trim().toLowerCase();
      if (/^[0-9a-f]{32}$/.test(id)) openTrace(id);
      else show('waterfall', note('A trace id is 32 hexadecimal characters.', 'error'));
    });
    resume();
  });
})();
