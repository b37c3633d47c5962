// Runs the browser test against fake-server.mjs: starts the fake on a free loopback port, runs
// dashboard.test.mjs with QUARRY_URL pointing at it, stops the fake and exits with the test's
// exit code. The test itself knows nothing of the fake (see its header for the environment).
//
//   node run-with-fake.mjs            (QUARRY_TOKEN, QUARRY_SCREENSHOT, FAKE_* pass through)
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const READY_TIMEOUT_MS = 15000; // the fake builds 10 000 workers' state before it listens
const env = {
  ...process.env,
  QUARRY_TOKEN: process.env.QUARRY_TOKEN ?? 'fake-token',
  QUARRY_TASK: process.env.QUARRY_TASK || 'file_cleanup',
};

const fake = spawn(process.execPath, [path.join(HERE, 'fake-server.mjs')], {
  env: { ...env, FAKE_PORT: '0' }, stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise((resolve, reject) => {
  let out = '';
  const timer = setTimeout(() => reject(new Error('the fake server did not start')), READY_TIMEOUT_MS);
  fake.stdout.on('data', (chunk) => {
    out += chunk;
    const m = /listening on (\S+)/.exec(out);
    if (m) {
      clearTimeout(timer);
      resolve(m[1]);
    }
  });
  fake.on('exit', (code) => reject(new Error(`the fake server exited with ${code}`)));
});
process.stdout.write(`fake server at ${url}\n`);

const run = spawn(process.execPath, ['--test', '--test-concurrency=1',
  path.join(HERE, 'dashboard.test.mjs')], { env: { ...env, QUARRY_URL: url }, stdio: 'inherit' });
const code = await new Promise((resolve) => run.on('exit', (c) => resolve(c ?? 1)));
fake.kill('SIGTERM');
process.exit(code);
