// A stand-in for `quarry serve`'s admin API, for developing the dashboard and its browser test
// before (and beside) the real server. It serves host/src/api/dashboard/ (read on every request,
// so edits show on reload) with a strict Content-Security-Policy, and answers the API in the
// shapes of host/src/api/model.rs with data that changes: ticks run on schedule, a trigger
// starts a tick, pause stops scheduled ticks, cancel and lift do what they say.
//
// It models only what the dashboard shows; it is not a model of the scheduler.
//
// Environment:
//   FAKE_PORT          port on 127.0.0.1 (default 0: any free one)
//   FAKE_WORKERS       number of workers (default 10000)
//   FAKE_INTERVAL_S    interval of the short task `file_cleanup` (default 4)
//   FAKE_COOLDOWN_S    trigger cooldown per task (default 60)
//   FAKE_AUTH_GETS     "1": GETs need the token too (as on a non-loopback listener)
//   QUARRY_TOKEN       the admin token (default "fake-token")
// Prints "listening on http://127.0.0.1:PORT" once ready.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ASSETS = path.resolve(HERE, '../../host/src/api/dashboard');
const WORKERS = Number(process.env.FAKE_WORKERS || 10000);
const SHORT_INTERVAL_S = Number(process.env.FAKE_INTERVAL_S || 4);
const COOLDOWN_S = Number(process.env.FAKE_COOLDOWN_S || 60);
const AUTH_GETS = process.env.FAKE_AUTH_GETS === '1';
const TOKEN = process.env.QUARRY_TOKEN || 'fake-token';
const TICK_MS = 1500; // how long a tick's runs take, start to last end
const STEP_MS = 250; // the fake scheduler's resolution
const MAX_RUNS = 300000; // older runs are forgotten (memory stays bounded at 10k workers)

export const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
  "connect-src 'self'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml',
};

// ---- Data ------------------------------------------------------------------------------------

const iso = (ms) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
const sha = (seed) => {
  let x = 0;
  let out = '';
  for (const ch of seed) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  for (let i = 0; i < 64; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out += (x >>> 16 & 15).toString(16);
  }
  return out;
};

const workers = ['local'];
for (let i = 1; i < WORKERS; i++) {
  workers.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}:22555`);
}
const workerIndex = new Map(workers.map((w, i) => [w, i]));

const plugins = [
  { name: 'file_cleanup', version: '1.4.2', idempotent: true, default_interval_seconds: 3600 },
  { name: 'disk_usage', version: '0.9.0', idempotent: true, default_interval_seconds: 600 },
  { name: 'log_rotate', version: '2.0.1', idempotent: true, default_interval_seconds: 86400 },
].map((p) => ({
  ...p, sha256: sha(p.name + p.version), wit_version: 'quarry:task@0.1.0',
  path: `/var/lib/quarry/plugins/${p.name}.wasm`, params_doc: `${p.name}: see docs/tasks.md`,
}));
const refused = [
  { path: '/var/lib/quarry/plugins/cert_check.wasm',
    reason: 'cert_check.wasm targets quarry:task@0.2.0; this host runs quarry:task@0.1.0' },
  { path: '/var/lib/quarry/plugins/<img src=x onerror="window.__quarryXss=1">.wasm',
    reason: 'not a component: <script>window.__quarryXss=1</script>' },
];

const t0 = Date.now();
const tasks = new Map();
function addTask(name, interval, extra = {}) {
  const plugin = plugins.find((p) => p.name === name);
  tasks.set(name, {
    name, task_class: extra.task_class || name, interval, on_failure: extra.on_failure || 'ignore',
    retries: extra.retries || 0, paused: !!extra.paused_reason, paused_reason: extra.paused_reason || null,
    plugin: plugin ? { name, version: plugin.version, sha256: plugin.sha256 } : null,
    nextAt: extra.paused_reason || !plugin ? null : t0 + (extra.firstInMs ?? interval * 1000),
    inFlight: null, lastTick: null, cooldownUntil: 0,
    last: new Int32Array(workers.length), // last run id per worker, 0 = none
  });
}
addTask('file_cleanup', SHORT_INTERVAL_S, { firstInMs: 300 });
addTask('disk_usage', 600, { on_failure: 'retry', retries: 2, firstInMs: 800 });
addTask('log_rotate', 86400, { task_class: 'rock.tasks.LogRotateTask', on_failure: 'halt',
  paused_reason: 'halted: tick 42 failed on 3 workers (on_failure: halt)' });
addTask('cert_check', 3600);

const quarantines = new Map(); // "task\0worker" -> QuarantineView
function quarantine(task, w, failures, reason) {
  const since = Date.now() - 120000;
  quarantines.set(`${task}\u0000${workers[w]}`, {
    task, worker: workers[w], since: iso(since), until: iso(since + 900000),
    consecutive_failures: failures, reason,
  });
}
quarantine('file_cleanup', 13 % workers.length, 3, 'trap: wasm `unreachable` instruction executed');
quarantine('disk_usage', 42 % workers.length, 5, 'memory: the run grew past its 64 MiB limit');

let nextTickId = 100;
let nextRunId = 5000;
const runs = []; // oldest first
const runById = new Map();

/** The outcome a run on worker w of task `name` ends with: mostly success, a few problem workers. */
function outcomeFor(name, w, tickId) {
  if (quarantines.has(`${name}\u0000${workers[w]}`)) return 'quarantined';
  const h = (w * 2654435761 + name.length * 97) >>> 0;
  if (h % 211 === 0) return 'failed';
  if (h % 307 === 0) return 'timeout';
  if (h % 401 === 0) return 'rejected';
  if (h % 503 === 0) return (tickId % 2) ? 'interrupted' : 'failed';
  if (h % 17 === 0) return 'skipped';
  return 'success';
}

const ERRORS = {
  failed: ['TaskResultFailed', 'rm: cannot remove \'/var/tmp/x\': Permission denied\n' +
    '<img src=x onerror="window.__quarryXss=1"><script>window.__quarryXss=1</script>'],
  timeout: ['TimeoutError', 'the run missed its 120 s deadline'],
  rejected: ['ConfigError', 'params.max_age_days: expected an integer, got "ten"'],
  interrupted: ['Interrupted', 'the host shut down while the run was in flight'],
  quarantined: ['Quarantined', 'not run: the task is quarantined on this worker'],
  cancelled: ['Cancelled', 'cancelled through the API'],
};

function startTick(task, trigger, targets) {
  const now = Date.now();
  const tick = { id: nextTickId++, trigger, started_at: iso(now), ended_at: null, outcome: 'running',
    pending: [], startedMs: now };
  for (const w of targets) {
    const run = {
      id: nextRunId++, tick_id: tick.id, task: task.name, worker: workers[w],
      plugin_version: task.plugin.version, plugin_sha256: task.plugin.sha256, attempt: 1,
      started_at: iso(now), ended_at: null, outcome: 'running', error_type: null, error: null,
      pid: null, w,
    };
    runs.push(run);
    runById.set(run.id, run);
    task.last[w] = run.id;
    tick.pending.push(run);
  }
  tick.total = targets.length;
  tick.outcomes = {};
  task.inFlight = tick;
  if (runs.length > MAX_RUNS) {
    for (const old of runs.splice(0, runs.length - MAX_RUNS)) runById.delete(old.id);
  }
  return tick;
}

function finishRun(task, run, outcome) {
  const now = Date.now();
  run.outcome = outcome;
  run.ended_at = iso(now);
  run.pid = 20000 + (run.id % 30000);
  if (ERRORS[outcome]) [run.error_type, run.error] = ERRORS[outcome];
  run.detail = outcome === 'success' || outcome === 'failed' ? {
    removed_files: (run.id * 7) % 23, freed_bytes: (run.id * 7919) % 10000000,
    paths: ['/var/tmp/a.log', '/var/tmp/<b>bold?</b>.log'],
    note: '<img src=x onerror="window.__quarryXss=1">',
  } : null;
  task.inFlight.outcomes[outcome] = (task.inFlight.outcomes[outcome] || 0) + 1;
}

function endTick(task, outcomeOverride) {
  const tick = task.inFlight;
  const counts = tick.outcomes;
  const bad = (counts.failed || 0) + (counts.timeout || 0) + (counts.rejected || 0);
  tick.outcome = outcomeOverride || (tick.total === 0 ? 'no_workers'
    : bad === 0 ? 'success' : bad === tick.total ? 'failed' : 'partial');
  tick.ended_at = iso(Date.now());
  task.lastTick = tick;
  task.inFlight = null;
}

/** The fake scheduler: due ticks start, runs in flight end a slice at a time. */
function step() {
  const now = Date.now();
  for (const task of tasks.values()) {
    const tick = task.inFlight;
    if (tick) {
      const due = Math.ceil(tick.total * Math.min(1, (now - tick.startedMs) / TICK_MS));
      const done = tick.total - tick.pending.length;
      for (const run of tick.pending.splice(0, Math.max(0, due - done))) {
        finishRun(task, run, outcomeFor(task.name, run.w, tick.id));
      }
      if (tick.pending.length === 0) endTick(task);
    }
    if (!task.paused && task.nextAt != null && now >= task.nextAt) {
      if (!task.inFlight) startTick(task, 'schedule', workers.map((_, i) => i));
      task.nextAt = now + task.interval * 1000;
    }
  }
}
setInterval(step, STEP_MS).unref();

// ---- Views -----------------------------------------------------------------------------------

const tickRef = (t) => t && { id: t.id, trigger: t.trigger, started_at: t.started_at,
  ended_at: t.ended_at, outcome: t.outcome };

function taskView(t) {
  let quarantined = 0;
  for (const q of quarantines.values()) if (q.task === t.name) quarantined++;
  return {
    name: t.name, task_class: t.task_class, plugin: t.plugin, interval_seconds: t.interval,
    next_tick: t.paused || t.nextAt == null ? null : iso(t.nextAt), paused: t.paused,
    paused_reason: t.paused_reason, on_failure: t.on_failure, retries: t.retries,
    in_flight: tickRef(t.inFlight), last_tick: tickRef(t.lastTick),
    quarantined_workers: quarantined,
    cooldown_until: t.cooldownUntil > Date.now() ? iso(t.cooldownUntil) : null,
  };
}

function runView(r, withDetail) {
  const { w: _w, detail, ...view } = r;
  view.outcome = r.outcome;
  if (withDetail) view.detail = detail ?? null;
  return view;
}

function gridView() {
  const names = [...tasks.keys()];
  const cols = [...tasks.values()];
  const cells = workers.map((_, w) => cols.map((t) => {
    const id = t.last[w];
    const r = id && runById.get(id);
    if (!r) return null;
    return { run_id: r.id, outcome: r.outcome === 'running' ? 'started' : r.outcome,
      at: r.ended_at || r.started_at };
  }));
  return { tasks: names, workers, cells };
}

// ---- HTTP ------------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, error, extra = {}) {
    super(error);
    this.status = status;
    this.extra = extra;
  }
}

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json', 'Cache-Control': 'no-store',
    'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff', ...headers,
  });
  res.end(text);
}

async function readJson(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 65536) throw new HttpError(413, 'request body over 64 KiB');
  }
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `request body is not JSON: ${e.message}`);
  }
}

function taskOr404(name) {
  const t = tasks.get(name);
  if (!t) {
    throw new HttpError(404, `no task named ${JSON.stringify(name)} is configured ` +
      `(configured: ${[...tasks.keys()].join(', ')})`);
  }
  return t;
}

function checkAuth(req) {
  const auth = req.headers.authorization || '';
  if (!auth) {
    throw new HttpError(401, 'this call needs the admin token: send Authorization: Bearer <quarry.api.token>');
  }
  if (auth !== `Bearer ${TOKEN}`) throw new HttpError(401, 'the bearer token does not match quarry.api.token');
}

function runsQuery(params) {
  const allowed = new Set(['task', 'worker', 'outcome', 'since', 'until', 'limit', 'before']);
  for (const k of params.keys()) if (!allowed.has(k)) throw new HttpError(400, `unknown query parameter ${k}`, { field: k });
  const limit = params.has('limit') ? Number(params.get('limit')) : 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw new HttpError(400, 'limit: must be an integer from 1 to 1000', { field: 'limit' });
  }
  const before = params.has('before') ? Number(params.get('before')) : Infinity;
  const task = params.get('task');
  const worker = params.get('worker');
  const outcome = params.get('outcome');
  const out = [];
  for (let i = runs.length - 1; i >= 0 && out.length <= limit; i--) {
    const r = runs[i];
    if (r.id >= before || (task && r.task !== task) || (worker && r.worker !== worker) ||
      (outcome && r.outcome !== outcome)) continue;
    out.push(r);
  }
  const more = out.length > limit;
  const page = out.slice(0, limit);
  return { runs: page.map((r) => runView(r, false)),
    next: more && page.length ? page[page.length - 1].id : null };
}

async function api(req, res, url) {
  const parts = url.pathname.split('/').slice(3).map(decodeURIComponent); // after /api/v1/
  const m = req.method;
  if (m !== 'GET' || AUTH_GETS) checkAuth(req);
  const route = `${m} ${parts[0]}${parts.length > 1 ? '/' + parts.length : ''}`;
  switch (route) {
    case 'GET tasks': return send(res, 200, [...tasks.values()].map(taskView));
    case 'GET tasks/2': return send(res, 200, taskView(taskOr404(parts[1])));
    case 'GET grid': return send(res, 200, gridView());
    case 'GET runs': return send(res, 200, runsQuery(url.searchParams));
    case 'GET runs/2': {
      const r = runById.get(Number(parts[1]));
      if (!r) throw new HttpError(404, `no run with id ${parts[1]}`);
      return send(res, 200, runView(r, true));
    }
    case 'GET plugins': return send(res, 200, { loaded: plugins, refused });
    case 'GET quarantines': return send(res, 200, [...quarantines.values()]);
    case 'POST tasks/3': return taskAction(req, res, taskOr404(parts[1]), parts[2]);
    case 'DELETE quarantines/3': {
      const key = `${parts[1]}\u0000${parts[2]}`;
      if (!quarantines.delete(key)) {
        throw new HttpError(404, `task ${JSON.stringify(parts[1])} is not quarantined on worker ${JSON.stringify(parts[2])}`);
      }
      return send(res, 204);
    }
    default: throw new HttpError(404, `no such endpoint: ${m} ${url.pathname}`);
  }
}

async function taskAction(req, res, t, action) {
  const body = await readJson(req);
  const now = Date.now();
  switch (action) {
    case 'trigger': {
      const unknownKey = Object.keys(body).find((k) => k !== 'workers');
      if (unknownKey) throw new HttpError(400, `unknown field ${unknownKey}`, { field: unknownKey });
      const asked = body.workers || [];
      const targets = [];
      asked.forEach((w, i) => {
        if (!workerIndex.has(w)) {
          throw new HttpError(400, `workers[${i}]: no worker ${JSON.stringify(w)} is known (see GET /api/v1/workers)`, { field: `workers[${i}]` });
        }
        targets.push(workerIndex.get(w));
      });
      if (!t.plugin) throw new HttpError(409, `task ${JSON.stringify(t.name)} has no plugin loaded`);
      if (t.cooldownUntil > now) {
        const left = Math.ceil((t.cooldownUntil - now) / 1000);
        const ago = Math.floor((now - (t.cooldownUntil - COOLDOWN_S * 1000)) / 1000);
        throw new HttpError(429, `task ${JSON.stringify(t.name)} was triggered ${ago} s ago; try again in ${left} s`,
          { retry_after_seconds: left });
      }
      if (t.inFlight) throw new HttpError(409, `task ${JSON.stringify(t.name)} has tick ${t.inFlight.id} in flight; wait for it or cancel it`);
      const tick = startTick(t, 'api', targets.length ? targets : workers.map((_, i) => i));
      t.cooldownUntil = now + COOLDOWN_S * 1000;
      return send(res, 200, { task: t.name, tick_id: tick.id, workers: tick.pending.map((r) => r.worker) });
    }
    case 'pause':
      t.paused = true;
      t.paused_reason = `paused through the API by token${body.reason ? `: ${body.reason}` : ''}`;
      return send(res, 204);
    case 'resume':
      t.paused = false;
      t.paused_reason = null;
      if (t.plugin) t.nextAt = now + t.interval * 1000;
      return send(res, 204);
    case 'cancel': {
      if (!t.inFlight) throw new HttpError(409, `task ${JSON.stringify(t.name)} has no tick in flight`);
      for (const run of t.inFlight.pending.splice(0)) finishRun(t, run, 'cancelled');
      endTick(t, 'cancelled');
      return send(res, 204);
    }
    default: throw new HttpError(404, `no such action: ${action}`);
  }
}

function asset(res, url) {
  const name = url.pathname === '/' ? 'index.html' : url.pathname.slice('/ui/'.length);
  const known = url.pathname === '/' || (url.pathname.startsWith('/ui/') &&
    /^[a-z0-9_-]+\.[a-z]+$/.test(name) && fs.readdirSync(ASSETS).includes(name) && name !== 'mod.rs');
  if (!known) return send(res, 404, { error: `no such page: ${url.pathname}` });
  res.writeHead(200, {
    'Content-Type': CONTENT_TYPES[path.extname(name)] || 'application/octet-stream',
    'Cache-Control': 'no-cache', 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
  });
  res.end(fs.readFileSync(path.join(ASSETS, name)));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  try {
    if (url.pathname.startsWith('/api/v1/')) await api(req, res, url);
    else if (req.method === 'GET') asset(res, url);
    else send(res, 405, { error: `${req.method} is not allowed on ${url.pathname}` });
  } catch (e) {
    if (e instanceof HttpError) {
      const headers = e.status === 429 ? { 'Retry-After': String(e.extra.retry_after_seconds) } : {};
      send(res, e.status, { error: e.message, ...e.extra }, headers);
    } else {
      send(res, 500, { error: `fake server bug: ${e.stack}` });
    }
  }
});

server.listen(Number(process.env.FAKE_PORT || 0), '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${server.address().port}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
