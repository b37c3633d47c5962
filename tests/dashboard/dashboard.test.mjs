// Real-browser test of Quarry's admin dashboard: Debian's Chromium driven by playwright-core,
// against a running server — `quarry serve`, or fake-server.mjs beside this file. It knows the
// server only by the environment:
//
//   QUARRY_URL         the server's base URL, e.g. http://127.0.0.1:8080 (required)
//   QUARRY_TASK        a configured task with a short interval (required; the test pauses and
//                      resumes it and waits for more than one interval)
//   QUARRY_TOKEN       the admin token (quarry.api.token); empty when the server has none
//   QUARRY_SCREENSHOT  where the full-page screenshot goes (default: <repo>/target/dashboard.png)
//   QUARRY_CHROMIUM    the browser (default /usr/bin/chromium)
//
// Run: `node --test --test-concurrency=1 dashboard.test.mjs` (or `npm test`). The steps share
// one page and run in order; each has a bound derived from the task's interval.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.QUARRY_URL || '').replace(/\/+$/, '');
const TASK = process.env.QUARRY_TASK || '';
const TOKEN = process.env.QUARRY_TOKEN || '';
const SCREENSHOT = path.resolve(process.env.QUARRY_SCREENSHOT ||
  path.join(HERE, '../../target/dashboard.png'));
const CHROMIUM = process.env.QUARRY_CHROMIUM || '/usr/bin/chromium';
// The flags this machine needs: no sandbox as root, and no background connections (the
// network is closed; Chromium's own connections would be refused, many at a time).
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync'];
const GRID_PAGE_ROWS = 200; // the dashboard's grid page (app.js)

if (!BASE || !TASK) {
  throw new Error('set QUARRY_URL (the server, e.g. http://127.0.0.1:8080) and QUARRY_TASK ' +
    '(a task with a short interval); QUARRY_TOKEN when the server has an admin token');
}

// ---- Helpers -----------------------------------------------------------------------------

/** GET from the API directly (not through the page), with the token when there is one. */
async function api(p) {
  const res = await fetch(`${BASE}/api/v1/${p}`, {
    headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {},
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET /api/v1/${p}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Calls `probe` until it returns something truthy; fails naming `what` after `ms`. */
async function waitFor(what, probe, ms, everyMs = 250) {
  const deadline = Date.now() + ms;
  let last = null;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = null;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}` +
        (last ? `; last error: ${last.message}` : ''));
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const sel = (testid, attrs = {}) => `[data-testid="${testid}"]` +
  Object.entries(attrs).map(([k, v]) => `[data-${k}=${JSON.stringify(String(v))}]`).join('');
const maxTick = (t) => Math.max(t.last_tick ? t.last_tick.id : 0, t.in_flight ? t.in_flight.id : 0);

let browser; // the persistent context
let page;
let profile;
let interval; // the task's interval, seconds
const problems = []; // CSP violations and uncaught script errors, checked last
let worker; // the worker the test triggers on
let triggered; // the Triggered answer
let triggeredRun; // the run id of the triggered run on `worker`
let tokenGiven = false;

async function answerToken() {
  const dialog = page.getByTestId('token-dialog');
  await dialog.waitFor({ state: 'visible', timeout: 15000 });
  await page.getByTestId('token-input').fill(TOKEN);
  await page.getByTestId('token-submit').click();
  await dialog.waitFor({ state: 'hidden', timeout: 5000 });
  tokenGiven = true;
}

before(async () => {
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'quarry-dashboard-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS,
    viewport: { width: 1440, height: 900 }, timeout: 60000,
  });
  page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  page.on('console', (m) => {
    if (/Content.Security.Policy|Refused to (load|execute|apply|connect)/i.test(m.text())) {
      problems.push(`CSP: ${m.text()}`);
    }
  });
  const t = await api(`tasks/${encodeURIComponent(TASK)}`);
  interval = t.interval_seconds;
  assert.ok(interval <= 120, `QUARRY_TASK=${TASK} has a ${interval} s interval; the test ` +
    'waits for more than one interval, so give it a task of 120 s or less');
});

after(async () => {
  if (browser) await browser.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

const row = () => page.locator(sel('task-row', { task: TASK }));

// ---- (a) ---------------------------------------------------------------------------------

test('a: the page loads, lists the task and draws one page of the grid', { timeout: 60000 }, async () => {
  await page.goto(`${BASE}/`);
  // A server listening beyond loopback wants the token for reads too: then the page asks now.
  await waitFor('the task row or the token dialog', async () =>
    (await row().isVisible()) || (await page.getByTestId('token-dialog').isVisible()), 15000);
  if (await page.getByTestId('token-dialog').isVisible()) {
    assert.ok(TOKEN, 'the server asks for a token to read, but QUARRY_TOKEN is empty');
    await answerToken();
  }
  await row().waitFor();
  assert.equal(await row().getByTestId('task-name').textContent(), TASK);

  const t = await api(`tasks/${encodeURIComponent(TASK)}`);
  const stateText = await row().getByTestId('task-state').textContent();
  assert.match(stateText, t.paused ? /Paused|Halted/ : /Active/, `state cell: ${stateText}`);
  await waitFor('"Updated hh:mm:ss"', async () =>
    /^Updated \d\d:\d\d:\d\d$/.test(await page.getByTestId('last-updated').textContent()), 10000);
  assert.equal(await page.getByTestId('offline-banner').isVisible(), false);

  // The grid: one page of rows at most, every worker counted, the task a column.
  const grid = await api('grid');
  assert.ok(grid.tasks.includes(TASK), `GET /api/v1/grid has no column ${TASK}`);
  assert.ok(grid.workers.length > 0, 'the server knows no worker');
  const expectRows = Math.min(GRID_PAGE_ROWS, grid.workers.length);
  await waitFor(`${expectRows} grid rows`, async () =>
    (await page.locator(sel('grid-row')).count()) === expectRows, 10000);
  const range = await page.getByTestId('grid-range').textContent();
  assert.ok(range.includes(`of ${grid.workers.length.toLocaleString('en-US')} worker`), range);
  assert.equal(await page.locator(sel('legend-item')).count(), 10, 'legend: ten outcomes');

  // The filter finds a worker that may be far beyond the first page.
  const last = grid.workers[grid.workers.length - 1];
  await page.getByTestId('grid-filter').fill(last);
  await waitFor(`the grid filtered to ${last}`, async () => {
    const shown = await page.locator(sel('grid-row')).evaluateAll((rows) =>
      rows.map((r) => r.dataset.worker));
    return shown.includes(last) &&
      shown.every((w) => w.toLowerCase().includes(last.toLowerCase()));
  }, 5000);
  await page.getByTestId('grid-filter').fill('');
});

// ---- (b) ---------------------------------------------------------------------------------

async function openTriggerOn(w) {
  await row().getByTestId('task-trigger').click();
  await page.getByTestId('trigger-dialog').waitFor();
  await page.getByTestId('trigger-some').check();
  await page.getByTestId('trigger-workers').fill(w);
}

const triggerAnswer = () => page.waitForResponse((r) =>
  r.request().method() === 'POST' &&
  r.url().endsWith(`/api/v1/tasks/${encodeURIComponent(TASK)}/trigger`) && r.status() !== 401,
{ timeout: 30000 });

async function readyToTrigger() {
  await waitFor(`${TASK} to have no tick in flight and no cooldown`, async () => {
    const t = await api(`tasks/${encodeURIComponent(TASK)}`);
    return !t.in_flight && (!t.cooldown_until || Date.parse(t.cooldown_until) <= Date.now());
  }, Math.max(90, interval * 3) * 1000, 200);
}

test('b: Trigger asks for the token, and the run shows in the runs list and the grid', { timeout: 240000 }, async (t) => {
  const grid = await api('grid');
  const quarantined = new Set((await api('quarantines'))
    .filter((q) => q.task === TASK).map((q) => q.worker));
  worker = grid.workers.find((w) => !quarantined.has(w));
  assert.ok(worker, `every worker is quarantined for ${TASK}`);

  // Show only this task on this worker in the runs list, so the fleet's runs don't push it out.
  await page.getByTestId('runs-task').selectOption(TASK);
  await page.getByTestId('runs-worker').fill(worker);
  await page.getByTestId('runs-worker').press('Enter');

  let answer;
  for (let attempt = 1; ; attempt++) {
    await readyToTrigger();
    await openTriggerOn(worker);
    const answered = triggerAnswer();
    await page.getByTestId('trigger-submit').click();
    if (TOKEN && !tokenGiven) {
      // A wrong token first: the page must say it was refused and ask again.
      await page.getByTestId('token-dialog').waitFor();
      await page.getByTestId('token-input').fill(`wrong-${Date.now()}`);
      await page.getByTestId('token-submit').click();
      await waitFor('the token dialog to ask again after a refused token', async () =>
        (await page.getByTestId('token-dialog').isVisible()) &&
        /refused/.test(await page.getByTestId('token-reason').textContent()), 15000);
      await answerToken();
    }
    answer = await answered;
    if (answer.status() === 409 && attempt < 3) {
      // A scheduled tick started between the check and the click: the server refuses to overlap.
      const body = await answer.json();
      await waitFor('the 409 message in the dialog', async () =>
        (await page.getByTestId('trigger-error').textContent()).includes(body.error), 5000);
      await page.getByTestId('trigger-dialog').getByRole('button', { name: 'Cancel' }).click();
      continue;
    }
    break;
  }
  assert.ok([200, 202].includes(answer.status()), `trigger answered ${answer.status()}: ${await answer.text()}`);
  triggered = await answer.json();
  assert.deepEqual(triggered.workers, [worker]);
  await page.getByTestId('trigger-dialog').waitFor({ state: 'hidden' });
  await waitFor(`a notice naming tick #${triggered.tick_id}`, async () =>
    (await page.getByTestId('notices').textContent()).includes(`tick #${triggered.tick_id}`), 5000);

  // The new run shows in the runs list.
  const runRow = page.locator(sel('run-row', { tick: triggered.tick_id, worker }));
  await runRow.waitFor({ timeout: 20000 });
  triggeredRun = Number(await runRow.getAttribute('data-run-id'));
  assert.equal(await runRow.getByTestId('run-task').textContent(), TASK);

  // Its grid cell is coloured: an outcome other than "none", this run or a later one.
  await page.getByTestId('grid-filter').fill(worker);
  const cell = page.locator(sel('grid-row', { worker })).locator(sel('grid-cell', { task: TASK }));
  await waitFor(`the grid cell of ${TASK} on ${worker} to show run #${triggeredRun} or later`, async () =>
    Number(await cell.getAttribute('data-run')) >= triggeredRun &&
    (await cell.getAttribute('data-outcome')) !== 'none', 20000);
  const outcome = await cell.getAttribute('data-outcome');
  const colour = await cell.evaluate((e) => getComputedStyle(e).backgroundColor);
  const noneColour = await page.locator(`${sel('legend-item', { outcome: 'none' })} .swatch`)
    .evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(colour, noneColour, `the ${outcome} cell is coloured like "no run"`);
  assert.ok((await cell.getAttribute('aria-label')).includes(outcome), 'the cell names its outcome');

  // A second trigger at once is refused (cooldown, or the tick still in flight), with the
  // server's message and, for a cooldown, the seconds left.
  await openTriggerOn(worker);
  const again = triggerAnswer();
  await page.getByTestId('trigger-submit').click();
  const refusal = await again;
  if (refusal.status() >= 200 && refusal.status() < 300) {
    t.diagnostic('the server accepted a second trigger at once: no cooldown configured');
    await page.getByTestId('trigger-dialog').waitFor({ state: 'hidden' });
  } else {
    const body = await refusal.json();
    assert.ok([409, 429].includes(refusal.status()), `second trigger: ${refusal.status()} ${body.error}`);
    await waitFor('the refusal in the dialog', async () => {
      const shown = await page.getByTestId('trigger-error').textContent();
      return shown.includes(body.error) && (refusal.status() !== 429 ||
        shown.includes(`retry in ${body.retry_after_seconds} s`));
    }, 5000);
    await page.getByTestId('trigger-dialog').getByRole('button', { name: 'Cancel' }).click();
    if (refusal.status() === 429) {
      assert.match(await row().getByTestId('task-cooldown').textContent(), /left/);
    }
  }
});

// ---- (c) ---------------------------------------------------------------------------------

test('c: Pause stops scheduled ticks for longer than the interval; Resume starts them again', { timeout: 300000 }, async () => {
  const reason = `dashboard browser test ${new Date().toISOString()}`;
  await row().getByTestId('task-pause').click();
  await page.getByTestId('pause-dialog').waitFor();
  await page.getByTestId('pause-reason').fill(reason);
  await page.getByTestId('pause-submit').click();
  await page.getByTestId('pause-dialog').waitFor({ state: 'hidden' });
  await waitFor('the task shown paused with the reason', async () => {
    const s = await row().getByTestId('task-state').textContent();
    return s.includes('Paused') && s.includes(reason);
  }, 10000);
  assert.equal(await row().getByTestId('task-resume').isVisible(), true);
  assert.equal(await row().getByTestId('task-pause').isVisible(), false);
  const paused = await api(`tasks/${encodeURIComponent(TASK)}`);
  assert.equal(paused.paused, true);
  assert.ok((paused.paused_reason || '').includes(reason), `paused_reason: ${paused.paused_reason}`);

  // Ticks known now (one in flight finishes) are the last ones for longer than an interval.
  const runs = await api(`runs?task=${encodeURIComponent(TASK)}&limit=1`);
  const known = Math.max(maxTick(paused), runs.runs.length ? runs.runs[0].tick_id : 0);
  const watchMs = Math.max(6000, interval * 1500 + 2000);
  const until = Date.now() + watchMs;
  while (Date.now() < until) {
    const t = await api(`tasks/${encodeURIComponent(TASK)}`);
    assert.ok(maxTick(t) <= known, `tick ${maxTick(t)} started while paused (last known ${known})`);
    assert.equal(t.paused, true);
    const newest = await api(`runs?task=${encodeURIComponent(TASK)}&limit=1`);
    assert.ok(!newest.runs.length || newest.runs[0].tick_id <= known,
      `run ${newest.runs[0] && newest.runs[0].id} of tick ${newest.runs[0] && newest.runs[0].tick_id} while paused`);
    const shownTicks = await page.locator(sel('run-row')).evaluateAll((rows) =>
      rows.map((r) => Number(r.dataset.tick)));
    assert.ok(shownTicks.every((id) => id <= known), `the runs list shows a tick after ${known}`);
    assert.match(await row().getByTestId('task-next').textContent(), /paused/);
    await new Promise((r) => setTimeout(r, 500));
  }

  await row().getByTestId('task-resume').click();
  await waitFor('the task shown active', async () =>
    /Active/.test(await row().getByTestId('task-state').textContent()) &&
    (await row().getByTestId('task-pause').isVisible()), 10000);
  const next = await waitFor(`a scheduled tick of ${TASK} after the resume`, async () => {
    const t = await api(`tasks/${encodeURIComponent(TASK)}`);
    return maxTick(t) > known ? maxTick(t) : 0;
  }, interval * 2000 + 15000, 200);
  await waitFor(`the runs list to show tick #${next} or later`, async () => {
    const shownTicks = await page.locator(sel('run-row')).evaluateAll((rows) =>
      rows.map((r) => Number(r.dataset.tick)));
    return shownTicks.some((id) => id >= next);
  }, 20000);
});

// ---- (d) ---------------------------------------------------------------------------------

async function checkRunDialog(id) {
  const dialog = page.getByTestId('run-detail');
  await waitFor(`the detail of run #${id}`, async () =>
    (await dialog.isVisible()) && (await dialog.getAttribute('data-run-id')) === String(id), 10000);
  await waitFor(`run #${id}'s outcome as the API gives it`, async () => {
    const run = await api(`runs/${id}`);
    return (await page.getByTestId('run-field-outcome').textContent()) === run.outcome &&
      (await page.getByTestId('run-badge').textContent()) === run.outcome;
  }, 10000);
  const run = await api(`runs/${id}`);
  assert.equal(await page.getByTestId('run-field-task').textContent(), run.task);
  assert.equal(await page.getByTestId('run-field-worker').textContent(), run.worker);
  assert.equal(await page.getByTestId('run-field-plugin_version').textContent(), run.plugin_version);
  assert.equal(await page.getByTestId('run-detail-json').textContent(),
    run.detail == null ? '(none)' : JSON.stringify(run.detail, null, 2));
  // Worker output stays text: no element was made from it.
  assert.equal(await dialog.locator('pre *').count(), 0);
  assert.equal(await page.evaluate(() => window.__quarryXss), undefined);
  await page.getByTestId('run-close').click();
  await dialog.waitFor({ state: 'hidden' });
}

test('d: a run\'s detail opens from the runs list and from the grid', { timeout: 60000 }, async () => {
  assert.ok(triggeredRun, 'step b found no run to open');
  await waitFor(`run #${triggeredRun} to end`, async () => (await api(`runs/${triggeredRun}`)).ended_at,
    Math.max(30, interval * 3) * 1000);
  const link = page.locator(sel('run-row', { 'run-id': triggeredRun })).getByTestId('run-link');
  await link.click();
  await checkRunDialog(triggeredRun);

  await page.getByTestId('grid-filter').fill(worker);
  const cell = page.locator(sel('grid-row', { worker })).locator(sel('grid-cell', { task: TASK }));
  await waitFor('a grid cell with a run', async () => (await cell.getAttribute('data-run')) != null, 10000);
  const id = Number(await cell.getAttribute('data-run'));
  await cell.click();
  await checkRunDialog(id);
});

// ---- More than the brief asks -----------------------------------------------------------

test('x1: an unreachable server shows a banner, and polling stops while the tab is hidden', { timeout: 60000 }, async () => {
  await page.route('**/api/v1/**', (route) => route.abort('connectionrefused'));
  const banner = page.getByTestId('offline-banner');
  await banner.waitFor({ state: 'visible', timeout: 10000 });
  assert.match(await banner.textContent(), /unreachable/i);
  await page.unroute('**/api/v1/**');
  await banner.waitFor({ state: 'hidden', timeout: 10000 });

  let calls = 0;
  const count = (req) => { if (req.url().includes('/api/v1/')) calls++; };
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await new Promise((r) => setTimeout(r, 1000)); // a poll already under way may finish
  page.on('request', count);
  await new Promise((r) => setTimeout(r, 5000));
  assert.equal(calls, 0, 'the dashboard polled while the tab was hidden');
  await page.evaluate(() => {
    delete document.hidden; // back to the prototype's getter
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await waitFor('polling to start again', async () => calls > 0, 5000);
  page.off('request', count);
});

/** Confirms the open confirm dialog; answers the POST/DELETE whose URL ends with `suffix`. */
async function confirmAndAnswer(method, suffix) {
  const answered = page.waitForResponse((r) => r.request().method() === method &&
    r.url().endsWith(suffix) && r.status() !== 401, { timeout: 30000 });
  await page.getByTestId('confirm-submit').click();
  return answered;
}

test('x2: Cancel stops a tick in flight and Lift ends a quarantine, each confirmed first', { timeout: 180000 }, async (t) => {
  // Cancel: only while a tick is in flight, which a fast task may never be long enough.
  const cancel = row().getByTestId('task-cancel');
  const caught = await cancel.waitFor({ timeout: Math.max(10, interval * 2) * 1000 })
    .then(() => true, () => false);
  if (!caught) {
    t.diagnostic(`no tick of ${TASK} was in flight long enough to cancel`);
  } else {
    await cancel.click();
    await page.getByTestId('confirm-dialog').waitFor();
    const tick = Number(/#(\d+)/.exec(await page.locator('#confirm-title').textContent())?.[1]);
    const answer = await confirmAndAnswer('POST', `/tasks/${encodeURIComponent(TASK)}/cancel`);
    if (answer.ok()) {
      await page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
      await waitFor(`tick #${tick} to end cancelled`, async () => {
        const task = await api(`tasks/${encodeURIComponent(TASK)}`);
        return task.last_tick && task.last_tick.id >= tick &&
          (task.last_tick.id > tick || task.last_tick.outcome === 'cancelled');
      }, 30000);
    } else {
      // The tick ended between the click and the confirmation: the server's 409 is shown.
      const body = await answer.json();
      assert.equal(answer.status(), 409, body.error);
      await waitFor('the 409 message in the confirm dialog', async () =>
        (await page.getByTestId('confirm-error').textContent()).includes(body.error), 5000);
      await page.locator('#confirm-keep').click();
    }
  }

  // Lift: only when the server has a quarantine in force.
  const quarantines = await api('quarantines');
  if (!quarantines.length) {
    t.diagnostic('no quarantine in force to lift');
    return;
  }
  const q = quarantines[0];
  const qRow = page.locator(sel('quarantine-row', { task: q.task, worker: q.worker }));
  await qRow.getByTestId('lift').click();
  await page.getByTestId('confirm-dialog').waitFor();
  const answer = await confirmAndAnswer('DELETE',
    `/quarantines/${encodeURIComponent(q.task)}/${encodeURIComponent(q.worker)}`);
  assert.ok(answer.ok(), `lift answered ${answer.status()}: ${await answer.text()}`);
  await qRow.waitFor({ state: 'detached', timeout: 10000 });
  assert.ok(!(await api('quarantines')).some((x) => x.task === q.task && x.worker === q.worker));
});

// ---- (e) ---------------------------------------------------------------------------------

test('e: a full-page screenshot for humans', { timeout: 60000 }, async (t) => {
  await page.getByTestId('grid-filter').fill('');
  await page.getByTestId('runs-worker').fill('');
  await page.getByTestId('runs-worker').press('Enter');
  await page.getByTestId('runs-task').selectOption('');
  // Dismiss the notices (some fade by themselves, so no waiting on each).
  await page.locator('.notice-close').evaluateAll((buttons) => buttons.forEach((b) => b.click()));
  await page.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  await new Promise((r) => setTimeout(r, 2500)); // one more poll, so the lists are full
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  assert.ok(fs.statSync(SCREENSHOT).size > 10000, `${SCREENSHOT} is nearly empty`);
  t.diagnostic(`screenshot: ${SCREENSHOT}`);
});

test('z: no Content-Security-Policy violation and no uncaught script error', () => {
  assert.deepEqual(problems, []);
});
