import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeTarGz } from '../server/keystores/archive.js';
import { pinnedRequest, startServer, type ServerProcess } from './helpers/server-process.js';
import { REVIEW_ARCHIVE, TOPICS_AT_BUDGET, XPOINTER_90K } from './helpers/xml-shapes.js';

const PASSWORD = 'xml-event-loop-admin-password';

const call = (url: string, opts: { method?: string; token?: string; body?: unknown } = {}) => pinnedRequest(url, undefined, opts);

/** Polls /health back to back until `done` settles; returns the slowest answer (ms) and how many were made. */
async function healthWhile(url: string, done: Promise<unknown>): Promise<{ maxMs: number; count: number }> {
  let finished = false;
  void done.finally(() => (finished = true));
  let maxMs = 0;
  let count = 0;
  while (!finished) {
    const t0 = performance.now();
    const res = await call(`${url}/health`);
    maxMs = Math.max(maxMs, performance.now() - t0);
    count++;
    assert.equal(res.status, 200);
  }
  return { maxMs, count };
}

/**
 * The server's own worst event-loop delay since the previous scrape (prom-client resets its histogram on each
 * collection): what a stalled loop does to every request, without the test client's own scheduling in it.
 */
async function loopDelayMaxMs(url: string): Promise<number> {
  const res = await call(`${url}/metrics`);
  const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(String(res.body));
  assert.ok(m, 'nodejs_eventloop_lag_max_seconds in /metrics');
  return Number(m[1]) * 1000;
}

const SHAPES: Record<string, Record<string, string>> = {
  'two levels of 300 whole-file includes (the review archive)': REVIEW_ARCHIVE,
  'two levels of 300 xpointer includes building 90 000 enclaves': XPOINTER_90K,
  '300 × 300 topics: a policy of valid shape at the element budget': TOPICS_AT_BUDGET,
};

describe('the real server keeps answering /health while it reads an expensive policy archive', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-xml-loop-'));
  let server: ServerProcess;
  let token: string;
  before(async () => {
    server = await startServer(['--data-dir', path.join(root, 'data'), '--listen', '127.0.0.1:0', '--insecure-http'], { ENCLAVE_ADMIN_PASSWORD: PASSWORD });
    const login = await call(`${server.url}/v1/auth/login`, { method: 'POST', body: { username: 'admin', password: PASSWORD } });
    assert.equal(login.status, 200);
    token = login.body.token;
    assert.equal((await call(`${server.url}/v1/keystores`, { method: 'POST', token, body: { name: 'ks' } })).status, 201);
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  for (const [name, files] of Object.entries(SHAPES)) {
    test(`${name}: the server's loop never waits 200 ms, /health keeps answering, the archive is answered`, async () => {
      const archive = await writeTarGz(Object.entries(files).map(([p, content]) => ({ path: p, type: 'file' as const, content })));
      await loopDelayMaxMs(server.url);
      const t0 = performance.now();
      const upload = call(`${server.url}/v1/keystores/ks/enclaves`, {
        method: 'POST',
        token,
        body: { path: '/x', policyArchive: archive.toString('base64') },
      });
      const health = await healthWhile(server.url, upload);
      const res = await upload;
      const ms = performance.now() - t0;
      const loopMs = await loopDelayMaxMs(server.url);
      assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${JSON.stringify(res.body)}`);
      assert.ok(health.count >= 3, `only ${health.count} /health answers during ${Math.round(ms)} ms`);
      const seen = `slowest /health ${Math.round(health.maxMs)} ms over ${health.count} polls, server loop delay at most ${Math.round(loopMs)} ms, archive answered in ${Math.round(ms)} ms`;
      console.log(`${name}: ${res.status} ${res.body?.error?.message?.slice(0, 120)}; ${seen}`);
      // The target: the server's loop is never held 200 ms by the archive (it was held 26 s before the sandbox).
      // /health as the client sees it also pays this machine's scheduling of two processes, so its bound is
      // looser; a loop held by the archive for its whole processing time would still fail it.
      assert.ok(loopMs < 200, seen);
      assert.ok(health.maxMs < Math.max(1000, ms / 2), seen);
    });
  }
});
