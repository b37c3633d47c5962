// Quarry's admin dashboard: plain JavaScript, no build step, no dependency.
//
// It runs under a Content-Security-Policy that allows scripts and styles from this origin
// only, so there is no inline script or style. Every string from the server reaches the page
// through textContent or an attribute, never through HTML parsing: run errors and details are
// worker output, and worker output is hostile.
//
// Strategy: one poll loop (every POLL_MS while the tab is visible, never two at once) loads
// the tasks, the runs page shown, quarantines, plugins and — no more often than it costs —
// the task × worker grid; each section keeps its last good data and renders from it. Actions
// go through `request(..., {interactive: true})`, which asks for the admin token on a 401 and
// sends again; the token lives in sessionStorage only.
'use strict';

(function () {
  // ---- Tunables ----------------------------------------------------------------------------
  const POLL_MS = 2000; // live updates: the dashboard's refresh period while visible
  const CLOCK_MS = 1000; // relative times ("in 3 s") are redrawn this often, without fetching
  const GRID_PAGE_ROWS = 200; // rows drawn at once: the grid stays fast at 10 000 workers
  const GRID_COST_FACTOR = 4; // refresh the grid at most every 4x what loading + drawing it took
  const GRID_FILTER_DEBOUNCE_MS = 120; // typing in the filter redraws once it pauses
  const RUNS_PAGE = 50; // recent runs per page
  const GET_TIMEOUT_MS = 10000; // a read slower than this counts as "server unreachable"
  const GRID_TIMEOUT_MS = 30000; // the grid is one large answer at 10 000 workers
  const ACTION_TIMEOUT_MS = 30000; // a mutating call may wait on the scheduler
  const OK_NOTICE_MS = 6000; // success notices fade; error notices stay until dismissed
  const MAX_WORKERS_FROM_FILTER = 5000; // "use the workers matching the filter" stops here
  const TOKEN_KEY = 'quarry.admin-token';
  const API = '/api/v1/';

  // Outcomes of one run (grid cells, runs list) and of a tick (tasks table). `label` is the
  // text drawn in a grid cell, so colour is never the only cue; `severity` orders "problems
  // first" (PROBLEM_SEVERITY and above count as problems).
  const OUTCOMES = {
    success: { label: 'ok', severity: 0 },
    started: { label: 'run', severity: 1 },
    running: { label: 'run', severity: 1 },
    skipped: { label: 'skip', severity: 1 },
    none: { label: '·', severity: 0 },
    no_workers: { label: 'none', severity: 1 },
    cancelled: { label: 'cxl', severity: 3 },
    interrupted: { label: 'int', severity: 4 },
    partial: { label: 'part', severity: 5 },
    rejected: { label: 'rej', severity: 5 },
    timeout: { label: 't/o', severity: 6 },
    failed: { label: 'fail', severity: 7 },
    quarantined: { label: 'quar', severity: 8 },
  };
  const PROBLEM_SEVERITY = 3;
  const GRID_LEGEND = ['success', 'started', 'skipped', 'failed', 'timeout', 'interrupted',
    'cancelled', 'quarantined', 'rejected', 'none'];
  const RUN_FILTER_OUTCOMES = ['running', 'success', 'skipped', 'failed', 'timeout',
    'interrupted', 'cancelled', 'quarantined', 'rejected'];
  const LEGEND_TEXT = {
    success: 'success', started: 'started (in flight)', skipped: 'skipped', failed: 'failed',
    timeout: 'timeout', interrupted: 'interrupted', cancelled: 'cancelled',
    quarantined: 'quarantined', rejected: 'rejected', none: 'no run yet',
  };

  const $ = (id) => document.getElementById(id);
  const SKIPPED = Symbol('skipped'); // a loader that had nothing to fetch this time

  // ---- DOM helpers: text only --------------------------------------------------------------

  /** An element; string children become text nodes (never parsed as HTML). */
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function setText(e, t) {
    const s = t == null ? '' : String(t);
    if (e.textContent !== s) e.textContent = s;
  }

  function setAttr(e, name, v) {
    if (v == null) {
      if (e.hasAttribute(name)) e.removeAttribute(name);
    } else if (e.getAttribute(name) !== String(v)) {
      e.setAttribute(name, String(v));
    }
  }

  function setClass(e, c) {
    if (e.className !== c) e.className = c;
  }

  /** Keyed reconciliation: rows are reused across polls, so focus and clicks survive. */
  function syncRows(tbody, items, keyOf, create, update) {
    const old = new Map();
    for (const tr of tbody.children) old.set(tr.qKey, tr);
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      let tr = old.get(key);
      if (tr) {
        old.delete(key);
      } else {
        tr = create(item);
        tr.qKey = key;
      }
      update(tr, item);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of old.values()) tr.remove();
  }

  function outcomeKey(o) {
    return Object.prototype.hasOwnProperty.call(OUTCOMES, o) ? o : 'unknown';
  }

  function setBadge(e, outcome) {
    setClass(e, 'badge o-' + outcomeKey(outcome));
    setText(e, outcome);
  }

  // ---- Time and number formatting ----------------------------------------------------------

  let skewMs = 0; // server clock minus ours, when they disagree by more than 2 s

  function noteServerDate(header) {
    const t = Date.parse(header || '');
    if (Number.isNaN(t)) return;
    const d = t + 500 - Date.now(); // Date has whole seconds
    if (Math.abs(d - skewMs) > 1500) skewMs = Math.abs(d) > 2000 ? d : 0;
  }

  const now = () => Date.now() + skewMs;
  const fmtInt = (n) => Number(n).toLocaleString('en-US');
  const plural = (n, word) => `${fmtInt(n)} ${word}${n === 1 ? '' : 's'}`;
  const pad = (n) => String(n).padStart(2, '0');

  function fmtSpan(sec) {
    if (sec < 90) return `${sec} s`;
    const m = Math.round(sec / 60);
    if (m < 90) return `${m} min`;
    const hours = Math.round(sec / 3600);
    if (hours < 48) return `${hours} h`;
    return `${Math.round(sec / 86400)} d`;
  }

  function fmtRel(iso) {
    const t = Date.parse(iso || '');
    if (Number.isNaN(t)) return iso || '—';
    const s = Math.round((t - now()) / 1000);
    if (s === 0) return 'now';
    return s > 0 ? `in ${fmtSpan(s)}` : `${fmtSpan(-s)} ago`;
  }

  function fmtInterval(sec) {
    const parts = [];
    let rest = Number(sec);
    for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60], ['s', 1]]) {
      if (rest >= size) {
        parts.push(`${Math.floor(rest / size)} ${unit}`);
        rest %= size;
      }
    }
    return parts.length ? parts.slice(0, 2).join(' ') : '0 s';
  }

  function fmtAbs(iso) {
    const t = Date.parse(iso || '');
    if (Number.isNaN(t)) return iso || '—';
    const d = new Date(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtTook(startIso, endIso) {
    const a = Date.parse(startIso || '');
    const b = endIso ? Date.parse(endIso) : now();
    if (Number.isNaN(a) || Number.isNaN(b)) return '—';
    const s = Math.max(0, (b - a) / 1000);
    return s < 10 ? `${s.toFixed(1)} s` : fmtSpan(Math.round(s));
  }

  const shortHash = (sha) => (sha ? String(sha).slice(0, 12) : '—');

  // ---- Token -------------------------------------------------------------------------------

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  }

  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage disabled: the token lasts as long as the request that asked for it.
    }
    renderTokenButton();
  }

  function renderTokenButton() {
    setText($('token-button'), getToken() ? 'Token set' : 'Set token');
    setAttr($('token-button'), 'title', getToken()
      ? 'An admin token is kept for this tab; click to replace or forget it'
      : 'Enter the admin token (asked anyway when an action needs it)');
  }

  let tokenAsk = null; // the one open token question; concurrent 401s share it
  let tokenDeclined = false; // the poll loop stops asking once the operator said no

  /** Opens the token dialog; resolves with the token entered, or null. */
  function askToken(reason) {
    if (tokenAsk) return tokenAsk;
    tokenAsk = new Promise((resolve) => {
      const dlg = $('token-dialog');
      const form = $('token-form');
      const input = $('token-input');
      setText($('token-reason'), reason);
      input.value = '';
      $('token-forget').hidden = !getToken();
      const finish = (value) => {
        form.removeEventListener('submit', onSubmit);
        $('token-cancel').removeEventListener('click', onCancel);
        $('token-forget').removeEventListener('click', onForget);
        dlg.removeEventListener('cancel', onCancel);
        if (dlg.open) dlg.close();
        tokenAsk = null;
        resolve(value);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        setToken(t);
        tokenDeclined = false;
        finish(t);
      };
      const onCancel = (ev) => {
        ev.preventDefault();
        finish(null);
      };
      const onForget = () => {
        setToken('');
        finish(null);
      };
      form.addEventListener('submit', onSubmit);
      $('token-cancel').addEventListener('click', onCancel);
      $('token-forget').addEventListener('click', onForget);
      dlg.addEventListener('cancel', onCancel);
      dlg.showModal();
      input.focus();
    });
    return tokenAsk;
  }

  // ---- HTTP --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, fallback) {
      super(body && typeof body.error === 'string' && body.error ? body.error : fallback);
      this.status = status;
      this.field = body && typeof body.field === 'string' ? body.field : null;
      this.retryAfter = body && Number.isFinite(body.retry_after_seconds)
        ? body.retry_after_seconds : null;
      this.needsToken = false;
    }

    /** No answer, or a gateway or the server saying it cannot serve now. */
    get unreachable() {
      return this.status === 0 || this.status === 502 || this.status === 503 ||
        this.status === 504;
    }
  }

  /** What the operator reads: the server's own message, plus what to do about it. */
  function describeError(e) {
    if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
    let msg = e.message;
    if (e.field && !msg.includes(e.field)) msg += ` (field: ${e.field})`;
    if (e.status === 429 && e.retryAfter != null) msg += ` — retry in ${e.retryAfter} s`;
    if (e.needsToken && !getToken()) msg += ' — not done: no admin token was given';
    return msg;
  }

  /**
   * One API call. A 401 clears a refused token and asks for one (for actions always, for the
   * poll loop until the operator declines), then sends again: nothing happened on a 401.
   */
  async function request(method, path, opts = {}) {
    const { body, interactive = false, timeoutMs = GET_TIMEOUT_MS } = opts;
    for (;;) {
      const headers = { Accept: 'application/json' };
      const token = getToken();
      if (token) headers.Authorization = 'Bearer ' + token;
      let payload;
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(body);
      }
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), timeoutMs);
      let res;
      let text;
      try {
        res = await fetch(API + path, {
          method, headers, body: payload, cache: 'no-store', credentials: 'same-origin',
          redirect: 'error', signal: ctl.signal,
        });
        text = await res.text();
      } catch (err) {
        throw new ApiError(0, null, ctl.signal.aborted
          ? `no answer from the server within ${timeoutMs / 1000} s`
          : `cannot reach the server (${err && err.message ? err.message : err})`);
      } finally {
        clearTimeout(timer);
      }
      noteServerDate(res.headers.get('Date'));
      let json = null;
      if (text) {
        try {
          json = JSON.parse(text);
        } catch {
          json = null;
        }
      }
      if (res.ok) return json;
      const err = new ApiError(res.status, json, `HTTP ${res.status} ${res.statusText}`.trim());
      if (res.status === 401) {
        if (token) setToken('');
        if (interactive || !tokenDeclined) {
          const reason = (token ? 'The server refused the token. ' : 'This needs the admin token. ') +
            `(Server: ${err.message})`;
          const t = await askToken(reason);
          if (t) continue;
          if (!interactive) tokenDeclined = true;
        }
        err.needsToken = true;
      }
      throw err;
    }
  }

  const enc = encodeURIComponent;

  // ---- Notices -----------------------------------------------------------------------------

  function notify(kind, text) {
    const close = h('button', { type: 'button', class: 'notice-close', 'aria-label': 'Dismiss' }, '×');
    const n = h('div', { class: 'notice ' + kind, 'data-testid': 'notice', 'data-kind': kind,
      role: kind === 'error' ? 'alert' : 'status' }, h('span', { class: 'notice-text' }, text), close);
    close.addEventListener('click', () => n.remove());
    $('notices').prepend(n);
    while ($('notices').children.length > 5) $('notices').lastChild.remove();
    if (kind !== 'error') setTimeout(() => n.remove(), OK_NOTICE_MS);
  }

  function showSectionError(id, e) {
    const p = $(id);
    if (e && !(e instanceof ApiError && e.unreachable)) {
      setText(p, `Could not load: ${describeError(e)}`);
      p.hidden = false;
    } else if (!e) {
      p.hidden = true;
    }
  }

  // ---- State -------------------------------------------------------------------------------

  const state = {
    tasks: null,
    quarantines: null,
    plugins: null,
    lastOk: 0, // when a poll last got answers
    offline: null, // the error that made the last poll fail, if it did
  };

  // ---- Tasks -------------------------------------------------------------------------------

  function taskRowCreate(t) {
    const c = (testid, cls) => h('td', { 'data-testid': testid, class: cls });
    const btn = (action, label, cls) => h('button', {
      type: 'button', class: cls, 'data-action': action, 'data-task': t.name,
      'data-testid': 'task-' + action,
    }, label);
    const r = {
      name: h('span', { class: 'task-name', 'data-testid': 'task-name' }),
      sub: h('span', { class: 'sub' }),
      plugin: c('task-plugin'), pluginVersion: h('span', { class: 'mono' }),
      pluginHash: h('span', { class: 'sub mono' }), interval: c('task-interval'),
      next: c('task-next'), nextWhen: h('span'), nextSub: h('span', { class: 'sub' }),
      stateBadge: h('span', { class: 'state' }), reason: h('span', { class: 'sub reason' }),
      lastBadge: h('span'), lastText: h('span', { class: 'sub' }),
      flightBadge: h('span'), flightText: h('span', { class: 'sub' }),
      quarantined: c('task-quarantined', 'num'), cooldown: c('task-cooldown'),
      trigger: btn('trigger', 'Trigger', 'primary small-button'),
      pause: btn('pause', 'Pause', 'small-button'),
      resume: btn('resume', 'Resume', 'primary small-button'),
      cancel: btn('cancel', 'Cancel', 'danger small-button'),
    };
    r.plugin.append(r.pluginVersion, r.pluginHash);
    r.next.append(r.nextWhen, r.nextSub);
    r.state = h('td', { 'data-testid': 'task-state' }, r.stateBadge, r.reason);
    r.last = h('td', { 'data-testid': 'task-last' }, r.lastBadge, r.lastText);
    r.flight = h('td', { 'data-testid': 'task-inflight' },
      r.flightBadge, r.flightText, r.cancel);
    const tr = h('tr', { 'data-testid': 'task-row', 'data-task': t.name },
      h('th', { scope: 'row' }, r.name, r.sub), r.plugin, r.interval, r.next, r.state, r.last,
      r.flight, r.quarantined, r.cooldown,
      h('td', { class: 'actions' }, h('div', { class: 'button-row' },
        r.trigger, r.pause, r.resume)));
    tr.q = r;
    return tr;
  }

  function tickText(tick, inFlight) {
    const parts = [`#${tick.id}`, tick.trigger];
    parts.push(inFlight ? `for ${fmtTook(tick.started_at, null)}`
      : fmtRel(tick.ended_at || tick.started_at));
    return parts.join(' · ');
  }

  function taskRowUpdate(tr, t) {
    const r = tr.q;
    setText(r.name, t.name);
    const sub = [];
    if (t.task_class && t.task_class !== t.name) sub.push(t.task_class);
    sub.push(`on failure: ${t.on_failure}${t.on_failure === 'retry' ? ` ×${t.retries}` : ''}`);
    setText(r.sub, sub.join(' · '));

    if (t.plugin) {
      setText(r.pluginVersion, t.plugin.version);
      setText(r.pluginHash, shortHash(t.plugin.sha256));
      setAttr(r.plugin, 'title', `${t.plugin.name} ${t.plugin.version}\nsha256 ${t.plugin.sha256}`);
      setClass(r.pluginVersion, 'mono');
    } else {
      setText(r.pluginVersion, 'not loaded');
      setText(r.pluginHash, '');
      setAttr(r.plugin, 'title', 'No plugin of this name is loaded; see Plugins');
      setClass(r.pluginVersion, 'warn-text');
    }
    setText(r.interval, fmtInterval(t.interval_seconds));

    if (t.paused || !t.next_tick) {
      setText(r.nextWhen, '—');
      setText(r.nextSub, t.paused ? 'paused' : 'not scheduled');
    } else {
      setText(r.nextWhen, Date.parse(t.next_tick) <= now() ? 'due now' : fmtRel(t.next_tick));
      setText(r.nextSub, '');
    }
    setAttr(r.next, 'title', t.next_tick ? fmtAbs(t.next_tick) : null);

    const halted = t.paused && /^halted/i.test(t.paused_reason || '');
    const stateName = halted ? 'Halted' : t.paused ? 'Paused' : 'Active';
    setText(r.stateBadge, stateName);
    setClass(r.stateBadge, 'state state-' + stateName.toLowerCase());
    setText(r.reason, t.paused ? (t.paused_reason || 'no reason given') : '');
    setAttr(r.reason, 'title', t.paused ? t.paused_reason : null);

    if (t.last_tick) {
      setBadge(r.lastBadge, t.last_tick.outcome);
      setText(r.lastText, tickText(t.last_tick, false));
      setAttr(r.last, 'title', `started ${fmtAbs(t.last_tick.started_at)}` +
        (t.last_tick.ended_at ? `, ended ${fmtAbs(t.last_tick.ended_at)}` : ''));
    } else {
      setClass(r.lastBadge, 'muted');
      setText(r.lastBadge, 'no tick yet');
      setText(r.lastText, '');
    }
    setAttr(r.last, 'data-tick', t.last_tick ? t.last_tick.id : null);

    if (t.in_flight) {
      setBadge(r.flightBadge, 'running');
      setText(r.flightText, tickText(t.in_flight, true));
    } else {
      setClass(r.flightBadge, 'muted');
      setText(r.flightBadge, '—');
      setText(r.flightText, '');
    }
    setAttr(r.flight, 'data-tick', t.in_flight ? t.in_flight.id : null);

    setText(r.quarantined, fmtInt(t.quarantined_workers));
    setClass(r.quarantined, t.quarantined_workers > 0 ? 'num warn-text' : 'num muted');

    const cd = t.cooldown_until ? Math.ceil((Date.parse(t.cooldown_until) - now()) / 1000) : 0;
    setText(r.cooldown, cd > 0 ? `${fmtSpan(cd)} left` : '—');
    setAttr(r.cooldown, 'title', cd > 0 ? `A trigger is refused until ${fmtAbs(t.cooldown_until)}` : null);
    setClass(r.cooldown, cd > 0 ? 'warn-text' : 'muted');

    r.pause.hidden = t.paused;
    r.resume.hidden = !t.paused;
    r.cancel.hidden = !t.in_flight;
    setAttr(r.trigger, 'title', t.in_flight
      ? 'A tick is in flight: the server refuses to overlap it' : null);
  }

  function renderTasks() {
    const tasks = state.tasks;
    if (!tasks) return;
    syncRows($('tasks-body'), tasks, (t) => t.name, taskRowCreate, taskRowUpdate);
    $('tasks-empty').hidden = tasks.length > 0;
    const paused = tasks.filter((t) => t.paused).length;
    const flying = tasks.filter((t) => t.in_flight).length;
    setText($('tasks-summary'), [plural(tasks.length, 'task'),
      paused ? `${fmtInt(paused)} paused or halted` : null,
      flying ? `${fmtInt(flying)} in flight` : null].filter(Boolean).join(' · '));
    syncTaskFilter(tasks);
  }

  function syncTaskFilter(tasks) {
    const sel = $('runs-task');
    const names = tasks.map((t) => t.name);
    const have = Array.from(sel.options).slice(1).map((o) => o.value);
    if (have.join('\n') === names.join('\n')) return;
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const n of names) sel.append(h('option', { value: n }, n));
    sel.value = names.includes(keep) ? keep : '';
  }

  /** Loads one section's data; its error line says why that failed, the rest goes on. */
  async function loadSection(errorId, path, apply, opts) {
    try {
      apply(await request('GET', path, opts));
      showSectionError(errorId, null);
    } catch (e) {
      showSectionError(errorId, e);
      throw e;
    }
  }

  const loadTasks = () => loadSection('tasks-error', 'tasks', (data) => {
    state.tasks = data;
    renderTasks();
  });

  function taskByName(name) {
    return (state.tasks || []).find((t) => t.name === name) || null;
  }

  // ---- Grid --------------------------------------------------------------------------------

  const grid = {
    data: null,
    lower: [], // workers, lower-cased, for the filter
    severity: null, // worst outcome per row
    problems: null, // problem cells per row
    view: [], // row indices after filter and sort
    page: 0,
    filter: '',
    problemsFirst: false,
    fetchedAt: 0,
    costMs: 0,
    columns: '', // the task list the header and pooled rows were built for
  };

  function gridIngest(data) {
    const rows = data.workers.length;
    const counts = Object.fromEntries(GRID_LEGEND.map((o) => [o, 0]));
    grid.severity = new Uint8Array(rows);
    grid.problems = new Uint16Array(rows);
    grid.lower = data.workers.map((w) => String(w).toLowerCase());
    for (let w = 0; w < rows; w++) {
      const row = data.cells[w] || [];
      let worst = 0;
      let problems = 0;
      for (let t = 0; t < data.tasks.length; t++) {
        const cell = row[t];
        const o = cell ? cell.outcome : 'none';
        counts[o] = (counts[o] || 0) + 1;
        const sev = (OUTCOMES[o] || { severity: 2 }).severity;
        if (sev > worst) worst = sev;
        if (sev >= PROBLEM_SEVERITY) problems++;
      }
      grid.severity[w] = worst;
      grid.problems[w] = Math.min(problems, 65535);
    }
    grid.data = data;
    renderLegend(counts);
    gridRecompute();
  }

  function gridRecompute() {
    const data = grid.data;
    if (!data) return;
    const needle = grid.filter.trim().toLowerCase();
    let view = [];
    for (let w = 0; w < data.workers.length; w++) {
      if (!needle || grid.lower[w].includes(needle)) view.push(w);
    }
    if (grid.problemsFirst) {
      const sev = grid.severity;
      const prob = grid.problems;
      view = view.sort((a, b) => (sev[b] - sev[a]) || (prob[b] - prob[a]) || (a - b));
    }
    grid.view = view;
    const pages = Math.max(1, Math.ceil(view.length / GRID_PAGE_ROWS));
    if (grid.page >= pages) grid.page = pages - 1;
    renderGrid();
  }

  function gridHeader(tasks) {
    const key = tasks.join('\n');
    if (grid.columns === key) return false;
    grid.columns = key;
    const head = $('grid-head');
    head.replaceChildren(h('th', { scope: 'col', class: 'worker-col' }, 'Worker'),
      ...tasks.map((t) => h('th', { scope: 'col', title: t, class: 'task-col' },
        h('span', {}, t))));
    $('grid-body').replaceChildren(); // rows are pooled per column set
    return true;
  }

  function gridRowCreate(ntasks) {
    const name = h('th', { scope: 'row', class: 'worker' });
    const cells = [];
    const tds = [];
    for (let t = 0; t < ntasks; t++) {
      const b = h('button', { type: 'button', 'data-testid': 'grid-cell' });
      cells.push(b);
      tds.push(h('td', {}, b));
    }
    const tr = h('tr', { 'data-testid': 'grid-row' }, name, ...tds);
    tr.q = { name, cells };
    return tr;
  }

  function renderGrid() {
    const data = grid.data;
    if (!data) return;
    gridHeader(data.tasks);
    const body = $('grid-body');
    const start = grid.page * GRID_PAGE_ROWS;
    const rows = grid.view.slice(start, start + GRID_PAGE_ROWS);
    while (body.children.length < rows.length) body.append(gridRowCreate(data.tasks.length));
    while (body.children.length > rows.length) body.lastChild.remove();
    rows.forEach((w, i) => {
      const tr = body.children[i];
      const worker = data.workers[w];
      setAttr(tr, 'data-worker', worker);
      setText(tr.q.name, worker);
      setAttr(tr.q.name, 'title', worker);
      const row = data.cells[w] || [];
      data.tasks.forEach((task, t) => {
        const cell = row[t];
        const b = tr.q.cells[t];
        const o = cell ? cell.outcome : 'none';
        setClass(b, 'cell o-' + outcomeKey(o));
        setText(b, (OUTCOMES[o] || { label: String(o).slice(0, 4) }).label);
        setAttr(b, 'data-outcome', o);
        setAttr(b, 'data-task', task);
        setAttr(b, 'data-worker', worker);
        setAttr(b, 'data-run', cell ? cell.run_id : null);
        b.disabled = !cell;
        const label = cell
          ? `${task} on ${worker}: ${o}, run #${cell.run_id}, ${fmtAbs(cell.at)}`
          : `${task} on ${worker}: no run yet`;
        setAttr(b, 'aria-label', label);
        setAttr(b, 'title', label);
      });
    });
    const total = grid.view.length;
    setText($('grid-range'), total === 0 ? '0 workers'
      : `${fmtInt(start + 1)}–${fmtInt(start + rows.length)} of ${plural(total, 'worker')}`);
    $('grid-prev').disabled = grid.page === 0;
    $('grid-next').disabled = start + GRID_PAGE_ROWS >= total;
    $('grid-empty').hidden = total > 0;
    const problemRows = grid.severity.reduce((n, s) => n + (s >= PROBLEM_SEVERITY ? 1 : 0), 0);
    setText($('grid-summary'), `${plural(data.workers.length, 'worker')} × ` +
      `${plural(data.tasks.length, 'task')} · ${plural(problemRows, 'worker')} with problems`);
  }

  function renderLegend(counts) {
    const ul = $('grid-legend');
    if (!ul.children.length) {
      for (const o of GRID_LEGEND) {
        ul.append(h('li', { 'data-testid': 'legend-item', 'data-outcome': o },
          h('span', { class: 'cell swatch o-' + o, 'aria-hidden': 'true' }, OUTCOMES[o].label),
          h('span', { class: 'legend-name' }, LEGEND_TEXT[o]),
          h('span', { class: 'legend-count' })));
      }
    }
    for (const li of ul.children) {
      setText(li.lastChild, fmtInt(counts[li.dataset.outcome] || 0));
    }
  }

  async function loadGrid(force) {
    const since = Date.now() - grid.fetchedAt;
    if (!force && grid.data && since < Math.max(POLL_MS, grid.costMs * GRID_COST_FACTOR)) {
      return SKIPPED;
    }
    const t0 = performance.now();
    await loadSection('grid-error', 'grid', (data) => {
      gridIngest(data);
      grid.fetchedAt = Date.now();
      grid.costMs = performance.now() - t0;
    }, { timeoutMs: GRID_TIMEOUT_MS });
  }

  /** The workers now matching the grid filter (in view order). */
  function filteredWorkers() {
    if (!grid.data) return [];
    return grid.view.map((w) => grid.data.workers[w]);
  }

  // ---- Runs --------------------------------------------------------------------------------

  const runs = { task: '', outcome: '', worker: '', before: null, older: [], page: null };

  function runRowCreate(run) {
    const c = (testid, cls) => h('td', { 'data-testid': testid, class: cls });
    const r = {
      link: h('button', { type: 'button', class: 'link', 'data-testid': 'run-link' }),
      task: c('run-task'), worker: c('run-worker', 'mono clip'), tick: c('run-tick', 'mono'),
      started: c('run-started'), took: c('run-took', 'num'),
      outcome: h('span'), error: c('run-error', 'clip error-text'),
    };
    const tr = h('tr', { 'data-testid': 'run-row', 'data-run-id': run.id },
      h('td', {}, r.link), r.task, r.worker, r.tick, r.started, r.took,
      h('td', { 'data-testid': 'run-outcome' }, r.outcome), r.error);
    tr.q = r;
    return tr;
  }

  function runRowUpdate(tr, run) {
    const r = tr.q;
    setText(r.link, `#${run.id}`);
    setAttr(r.link, 'aria-label', `Run ${run.id} details`);
    setAttr(tr, 'data-task', run.task);
    setAttr(tr, 'data-worker', run.worker);
    setAttr(tr, 'data-tick', run.tick_id);
    setAttr(tr, 'data-outcome', run.outcome);
    setText(r.task, run.task);
    setText(r.worker, run.worker);
    setAttr(r.worker, 'title', run.worker);
    setText(r.tick, run.attempt > 1 ? `#${run.tick_id} (try ${run.attempt})` : `#${run.tick_id}`);
    setText(r.started, fmtRel(run.started_at));
    setAttr(r.started, 'title', fmtAbs(run.started_at));
    setText(r.took, fmtTook(run.started_at, run.ended_at));
    setBadge(r.outcome, run.outcome);
    const err = [run.error_type, run.error].filter(Boolean).join(': ');
    setText(r.error, err);
    setAttr(r.error, 'title', err || null);
  }

  function renderRuns() {
    const page = runs.page;
    if (!page) return;
    syncRows($('runs-body'), page.runs, (r) => r.id, runRowCreate, runRowUpdate);
    $('runs-empty').hidden = page.runs.length > 0;
    $('runs-older').disabled = page.next == null;
    $('runs-newest').disabled = runs.before == null;
    const where = runs.before == null ? 'newest first' : `page ${runs.older.length + 1}`;
    setText($('runs-summary'), `${plural(page.runs.length, 'run')} · ${where}`);
  }

  function loadRuns() {
    const asked = runsQueryNow();
    return loadSection('runs-error', 'runs?' + asked, (page) => {
      if (asked !== runsQueryNow()) return; // the filters changed while this was in flight
      runs.page = page;
      renderRuns();
    });
  }

  function runsQueryNow() {
    const q = new URLSearchParams({ limit: String(RUNS_PAGE) });
    if (runs.task) q.set('task', runs.task);
    if (runs.outcome) q.set('outcome', runs.outcome);
    if (runs.worker) q.set('worker', runs.worker);
    if (runs.before != null) q.set('before', String(runs.before));
    return q.toString();
  }

  function runsFiltersChanged() {
    runs.task = $('runs-task').value;
    runs.outcome = $('runs-outcome').value;
    runs.worker = $('runs-worker').value.trim();
    runs.before = null;
    runs.older = [];
    loadRuns().catch(() => {});
  }

  // ---- Run detail --------------------------------------------------------------------------

  let openRunId = null;
  let openRunDone = false;

  const RUN_FIELDS = [
    ['id', 'Run', (r) => `#${r.id}`],
    ['task', 'Task', (r) => r.task],
    ['worker', 'Worker', (r) => r.worker],
    ['tick', 'Tick', (r) => `#${r.tick_id}`],
    ['attempt', 'Attempt', (r) => String(r.attempt)],
    ['outcome', 'Outcome', (r) => r.outcome],
    ['error_type', 'Error type', (r) => r.error_type || '—'],
    ['started', 'Started', (r) => `${fmtAbs(r.started_at)} (${fmtRel(r.started_at)})`],
    ['ended', 'Ended', (r) => (r.ended_at ? `${fmtAbs(r.ended_at)} (${fmtRel(r.ended_at)})` : 'in flight')],
    ['took', 'Took', (r) => fmtTook(r.started_at, r.ended_at)],
    ['pid', 'Pid', (r) => (r.pid == null ? '—' : String(r.pid))],
    ['plugin_version', 'Plugin version', (r) => r.plugin_version],
    ['plugin_sha256', 'Plugin SHA-256', (r) => r.plugin_sha256],
  ];

  function renderRun(run) {
    const dlg = $('run-dialog');
    setAttr(dlg, 'data-run-id', run.id);
    setText($('run-title'), `Run #${run.id} · ${run.task} on ${run.worker}`);
    setBadge($('run-outcome'), run.outcome);
    const dl = $('run-fields');
    dl.replaceChildren();
    for (const [key, label, value] of RUN_FIELDS) {
      dl.append(h('div', { class: 'field-pair' }, h('dt', {}, label),
        h('dd', { 'data-testid': 'run-field-' + key, class: /sha|worker/.test(key) ? 'mono' : null },
          value(run))));
    }
    $('run-message-box').hidden = !run.error;
    setText($('run-message'), run.error || '');
    const detail = run.detail;
    setText($('run-detail-json'), detail === undefined || detail === null
      ? '(none)' : JSON.stringify(detail, null, 2));
    openRunDone = !!run.ended_at;
  }

  async function openRun(id) {
    const dlg = $('run-dialog');
    openRunId = id;
    openRunDone = false;
    setText($('run-title'), `Run #${id}`);
    setAttr(dlg, 'data-run-id', null);
    $('run-fields').replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    setText($('run-outcome'), '');
    setClass($('run-outcome'), 'badge');
    setText($('run-detail-json'), '');
    $('run-message-box').hidden = true;
    $('run-error-load').hidden = true;
    if (!dlg.open) dlg.showModal();
    history.replaceState(null, '', '#run=' + id);
    await refreshOpenRun(true);
  }

  async function refreshOpenRun(first) {
    if (openRunId == null || (!first && openRunDone)) return SKIPPED;
    const id = openRunId;
    try {
      const run = await request('GET', 'runs/' + enc(id));
      if (openRunId !== id) return;
      $('run-error-load').hidden = true;
      renderRun(run);
    } catch (e) {
      if (openRunId !== id) return;
      setText($('run-error-load'), `Could not load run #${id}: ${describeError(e)}`);
      $('run-error-load').hidden = false;
      if (first) $('run-fields').replaceChildren();
      if (!first) throw e;
    }
  }

  function closeRun() {
    openRunId = null;
    if (/^#run=/.test(location.hash)) history.replaceState(null, '', location.pathname + location.search);
  }

  function runFromHash() {
    const m = /^#run=(\d+)$/.exec(location.hash);
    if (m) openRun(Number(m[1]));
  }

  // ---- Quarantines and plugins -------------------------------------------------------------

  function quarantineRowCreate(q) {
    const r = {
      task: h('span', { class: 'task-name' }), worker: h('span', { class: 'sub mono clip' }),
      until: h('span', { class: 'nowrap' }), failures: h('span', { class: 'sub' }),
      reason: h('td', { class: 'wrap error-text' }),
      lift: h('button', { type: 'button', class: 'small-button', 'data-action': 'lift',
        'data-testid': 'lift', 'data-task': q.task, 'data-worker': q.worker }, 'Lift'),
    };
    const tr = h('tr', { 'data-testid': 'quarantine-row', 'data-task': q.task, 'data-worker': q.worker },
      h('td', {}, r.task, r.worker), h('td', { 'data-testid': 'quarantine-until' }, r.until, r.failures),
      r.reason, h('td', { class: 'actions' }, r.lift));
    tr.q = r;
    return tr;
  }

  function quarantineRowUpdate(tr, q) {
    const r = tr.q;
    setText(r.task, q.task);
    setText(r.worker, q.worker);
    setAttr(r.worker, 'title', q.worker);
    setText(r.until, fmtRel(q.until));
    setAttr(r.until, 'title', `since ${fmtAbs(q.since)}, until ${fmtAbs(q.until)} ` +
      '(then one probe run is let through)');
    setText(r.failures, plural(q.consecutive_failures, 'failure'));
    setText(r.reason, q.reason);
    setAttr(r.reason, 'title', q.reason);
    setAttr(r.lift, 'aria-label', `Lift the quarantine of ${q.task} on ${q.worker}`);
  }

  function renderQuarantines() {
    const list = state.quarantines;
    if (!list) return;
    syncRows($('quarantines-body'), list, (q) => q.task + '\u0000' + q.worker,
      quarantineRowCreate, quarantineRowUpdate);
    $('quarantines-empty').hidden = list.length > 0;
    setText($('quarantines-summary'), `${fmtInt(list.length)} in force`);
  }

  const loadQuarantines = () => loadSection('quarantines-error', 'quarantines', (data) => {
    state.quarantines = data;
    renderQuarantines();
  });

  function renderPlugins() {
    const p = state.plugins;
    if (!p) return;
    syncRows($('plugins-body'), p.loaded, (x) => `${x.name}\u0000${x.sha256}`, (x) => {
      const sha = h('td', { class: 'mono', title: x.sha256 }, shortHash(x.sha256));
      return h('tr', { 'data-testid': 'plugin-row', 'data-plugin': x.name },
        h('td', { title: x.path }, x.name), h('td', { class: 'mono' }, x.version), sha,
        h('td', { class: 'mono' }, x.wit_version), h('td', {}, x.idempotent ? 'yes' : 'no'),
        h('td', {}, fmtInterval(x.default_interval_seconds)));
    }, () => {});
    syncRows($('refused-body'), p.refused, (x) => `${x.path}\u0000${x.reason}`, (x) =>
      h('tr', { 'data-testid': 'refused-row' }, h('td', { class: 'mono wrap' }, x.path),
        h('td', { class: 'wrap error-text' }, x.reason)), () => {});
    $('plugins-empty').hidden = p.loaded.length > 0;
    $('refused-empty').hidden = p.refused.length > 0;
    setText($('plugins-summary'), `${fmtInt(p.loaded.length)} loaded · ${fmtInt(p.refused.length)} refused`);
  }

  const loadPlugins = () => loadSection('plugins-error', 'plugins', (data) => {
    state.plugins = data;
    renderPlugins();
  });

  // ---- Actions -----------------------------------------------------------------------------

  /** Sends an action from an open dialog: buttons off while it runs, errors shown inside. */
  async function submitFromDialog(dlg, errorEl, action) {
    errorEl.hidden = true;
    const buttons = Array.from(dlg.querySelectorAll('button'));
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action();
      if (dlg.open) dlg.close();
    } catch (e) {
      setText(errorEl, describeError(e));
      errorEl.hidden = false;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  let triggerTask = null;

  function parseWorkers(text) {
    return Array.from(new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean)));
  }

  function openTrigger(name) {
    triggerTask = name;
    setText($('trigger-title'), `Trigger ${name}`);
    const n = grid.data ? grid.data.workers.length : null;
    setText($('trigger-all-label'), n == null ? 'Every worker' : `Every worker (${fmtInt(n)})`);
    $('trigger-all').checked = true;
    $('trigger-workers').value = '';
    $('trigger-error').hidden = true;
    const matching = grid.filter.trim() ? grid.view.length : 0;
    updateTriggerSubmit();
    const fromFilter = $('trigger-from-filter');
    fromFilter.hidden = matching === 0;
    fromFilter.disabled = matching > MAX_WORKERS_FROM_FILTER;
    setText(fromFilter, matching > MAX_WORKERS_FROM_FILTER
      ? `The grid filter matches ${fmtInt(matching)} workers (more than ${fmtInt(MAX_WORKERS_FROM_FILTER)})`
      : `Use the ${plural(matching, 'worker')} matching the grid filter`);
    $('trigger-dialog').showModal();
  }

  /** The submit button says how many workers it runs on: no surprise at 10 000 workers. */
  function updateTriggerSubmit() {
    const n = $('trigger-some').checked
      ? parseWorkers($('trigger-workers').value).length
      : grid.data ? grid.data.workers.length : null;
    setText($('trigger-submit'), n == null ? 'Trigger on every worker'
      : $('trigger-some').checked ? `Trigger on ${plural(n, 'worker')}`
        : `Trigger on every worker (${fmtInt(n)})`);
  }

  async function submitTrigger() {
    const name = triggerTask;
    const some = $('trigger-some').checked;
    const workers = some ? parseWorkers($('trigger-workers').value) : [];
    if (some && workers.length === 0) {
      setText($('trigger-error'), 'Name at least one worker, or choose every worker.');
      $('trigger-error').hidden = false;
      return;
    }
    await submitFromDialog($('trigger-dialog'), $('trigger-error'), async () => {
      const r = await request('POST', `tasks/${enc(name)}/trigger`, {
        body: some ? { workers } : {}, interactive: true, timeoutMs: ACTION_TIMEOUT_MS,
      });
      const count = r && Array.isArray(r.workers) ? r.workers.length : workers.length;
      notify('ok', `Triggered ${name}: tick #${r ? r.tick_id : '?'} on ${plural(count, 'worker')}.`);
      refreshSoon();
    });
  }

  let pauseTask = null;

  function openPause(name) {
    pauseTask = name;
    setText($('pause-title'), `Pause ${name}`);
    $('pause-reason').value = '';
    $('pause-error').hidden = true;
    $('pause-dialog').showModal();
    $('pause-reason').focus();
  }

  async function submitPause() {
    const name = pauseTask;
    const reason = $('pause-reason').value.trim();
    await submitFromDialog($('pause-dialog'), $('pause-error'), async () => {
      await request('POST', `tasks/${enc(name)}/pause`, {
        body: reason ? { reason } : {}, interactive: true, timeoutMs: ACTION_TIMEOUT_MS,
      });
      notify('ok', `Paused ${name}.`);
      refreshSoon();
    });
  }

  async function resume(name, button) {
    button.disabled = true;
    try {
      await request('POST', `tasks/${enc(name)}/resume`, {
        interactive: true, timeoutMs: ACTION_TIMEOUT_MS,
      });
      notify('ok', `Resumed ${name}.`);
      refreshSoon();
    } catch (e) {
      notify('error', `Resume ${name}: ${describeError(e)}`);
    } finally {
      button.disabled = false;
    }
  }

  let confirmAction = null;

  function openConfirm(title, text, buttonLabel, action) {
    confirmAction = action;
    setText($('confirm-title'), title);
    setText($('confirm-text'), text);
    setText($('confirm-submit'), buttonLabel);
    $('confirm-error').hidden = true;
    $('confirm-dialog').showModal();
    $('confirm-keep').focus(); // the safe choice has the focus
  }

  function openCancel(name) {
    const t = taskByName(name);
    const tick = t && t.in_flight ? `tick #${t.in_flight.id}` : 'the tick in flight';
    openConfirm(`Cancel ${tick} of ${name}?`,
      'Runs not started yet are not started; runs in flight stop at their next host call ' +
      'and end as "cancelled". Scheduled ticks go on.',
      'Cancel tick', async () => {
        await request('POST', `tasks/${enc(name)}/cancel`, {
          interactive: true, timeoutMs: ACTION_TIMEOUT_MS,
        });
        notify('ok', `Cancelled ${tick} of ${name}.`);
        refreshSoon();
      });
  }

  function openLift(task, worker) {
    openConfirm(`Lift the quarantine of ${task} on ${worker}?`,
      'Its next tick runs there again, even though the last runs trapped, overran memory or ' +
      'missed their deadline.',
      'Lift quarantine', async () => {
        await request('DELETE', `quarantines/${enc(task)}/${enc(worker)}`, {
          interactive: true, timeoutMs: ACTION_TIMEOUT_MS,
        });
        notify('ok', `Lifted the quarantine of ${task} on ${worker}.`);
        refreshSoon();
      });
  }

  // ---- Poll loop ---------------------------------------------------------------------------

  let pollTimer = 0;
  let polling = false;
  let pollAgain = false;

  function refreshSoon() {
    grid.fetchedAt = 0; // an action changes the grid: fetch it with the rest
    poll();
  }

  async function poll() {
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    clearTimeout(pollTimer);
    try {
      const results = await Promise.allSettled([loadTasks(), loadRuns(), loadQuarantines(),
        loadPlugins(), loadGrid(false), refreshOpenRun(false)]);
      const errors = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
      const answered = results.some((r) => r.status === 'fulfilled' && r.value !== SKIPPED) ||
        errors.some((e) => !(e instanceof ApiError) || !e.unreachable);
      const tokenNeeded = errors.find((e) => e instanceof ApiError && e.needsToken);
      if (!answered) {
        state.offline = errors[0];
      } else {
        state.offline = null;
        if (!tokenNeeded) state.lastOk = Date.now();
      }
      state.tokenNeeded = tokenNeeded || null;
      renderStatus();
    } finally {
      polling = false;
      if (pollAgain) {
        pollAgain = false;
        poll();
      } else if (!document.hidden) {
        pollTimer = setTimeout(poll, POLL_MS);
      }
    }
  }

  function renderStatus() {
    const banner = $('offline-banner');
    const updated = $('last-updated');
    const last = state.lastOk ? `${fmtClock(state.lastOk)}` : null;
    if (state.offline) {
      setText($('offline-title'), 'Server unreachable.');
      setText($('offline-text'), `${describeError(state.offline)}. ` +
        (last ? `Showing data from ${last} (${fmtSpan(Math.round((Date.now() - state.lastOk) / 1000))} ago); `
          : 'No data yet; ') + `retrying every ${POLL_MS / 1000} s.`);
      $('offline-token').hidden = true;
      banner.hidden = false;
    } else if (state.tokenNeeded) {
      setText($('offline-title'), 'Admin token needed.');
      setText($('offline-text'), `This server shows its data only with the admin token: ${describeError(state.tokenNeeded)}.`);
      $('offline-token').hidden = false;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    setText(updated, last ? `Updated ${last}` : 'Connecting…');
    setClass(updated, state.offline || state.tokenNeeded ? 'updated stale' : 'updated');
    setAttr(updated, 'title', last ? `Last answer from the server at ${new Date(state.lastOk).toString()}` : null);
  }

  /** Relative times move without fetching anything. */
  function clock() {
    if (document.hidden) return;
    renderTasks();
    renderQuarantines();
    if (runs.page) renderRuns();
    if (state.offline) renderStatus();
  }

  // ---- Wiring ------------------------------------------------------------------------------

  function wire() {
    renderTokenButton();
    for (const o of RUN_FILTER_OUTCOMES) $('runs-outcome').append(h('option', { value: o }, o));

    $('tasks-body').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (!b) return;
      const name = b.dataset.task;
      if (b.dataset.action === 'trigger') openTrigger(name);
      else if (b.dataset.action === 'pause') openPause(name);
      else if (b.dataset.action === 'resume') resume(name, b);
      else if (b.dataset.action === 'cancel') openCancel(name);
    });
    $('quarantines-body').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action="lift"]');
      if (b) openLift(b.dataset.task, b.dataset.worker);
    });
    $('grid-body').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-run]');
      if (b) openRun(Number(b.dataset.run));
    });
    $('runs-body').addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-run-id]');
      if (tr && (ev.target.closest('button') || !window.getSelection().toString())) {
        openRun(Number(tr.dataset.runId));
      }
    });

    let filterTimer = 0;
    $('grid-filter').addEventListener('input', () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        grid.filter = $('grid-filter').value;
        grid.page = 0;
        gridRecompute();
      }, GRID_FILTER_DEBOUNCE_MS);
    });
    $('grid-problems').addEventListener('change', () => {
      grid.problemsFirst = $('grid-problems').checked;
      grid.page = 0;
      gridRecompute();
    });
    $('grid-prev').addEventListener('click', () => {
      grid.page = Math.max(0, grid.page - 1);
      renderGrid();
    });
    $('grid-next').addEventListener('click', () => {
      grid.page += 1;
      renderGrid();
    });

    $('runs-task').addEventListener('change', runsFiltersChanged);
    $('runs-outcome').addEventListener('change', runsFiltersChanged);
    $('runs-worker').addEventListener('change', runsFiltersChanged);
    $('runs-worker').addEventListener('search', runsFiltersChanged);
    $('runs-older').addEventListener('click', () => {
      if (!runs.page || runs.page.next == null) return;
      runs.older.push(runs.before);
      runs.before = runs.page.next;
      loadRuns().catch(() => {});
    });
    $('runs-newest').addEventListener('click', () => {
      runs.before = null;
      runs.older = [];
      loadRuns().catch(() => {});
    });

    $('trigger-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitTrigger();
    });
    $('trigger-workers').addEventListener('input', () => {
      $('trigger-some').checked = true;
      updateTriggerSubmit();
    });
    $('trigger-from-filter').addEventListener('click', () => {
      $('trigger-workers').value = filteredWorkers().join('\n');
      $('trigger-some').checked = true;
      updateTriggerSubmit();
    });
    $('trigger-all').addEventListener('change', updateTriggerSubmit);
    $('trigger-some').addEventListener('change', updateTriggerSubmit);
    $('pause-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitPause();
    });
    $('confirm-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const action = confirmAction;
      if (action) submitFromDialog($('confirm-dialog'), $('confirm-error'), action);
    });
    for (const b of document.querySelectorAll('dialog [data-close]')) {
      b.addEventListener('click', () => b.closest('dialog').close());
    }
    $('run-dialog').addEventListener('close', closeRun);
    $('run-dialog').addEventListener('click', (ev) => {
      if (ev.target === $('run-dialog')) $('run-dialog').close(); // a click on the backdrop
    });

    const manualToken = () => {
      tokenDeclined = false;
      askToken(getToken() ? 'Replace or forget the admin token kept for this tab.'
        : 'Enter the admin token (quarry.api.token) for actions.').then(() => refreshSoon());
    };
    $('token-button').addEventListener('click', manualToken);
    $('offline-token').addEventListener('click', manualToken);

    document.addEventListener('visibilitychange', () => {
      if (document.hidden) clearTimeout(pollTimer);
      else refreshSoon();
    });
    window.addEventListener('hashchange', runFromHash);
    setInterval(clock, CLOCK_MS);
    runFromHash();
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
}());
