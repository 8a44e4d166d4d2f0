import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { ConfigError, parseCommandLine } from '../server/config.js';
import { assertion, deviceKey } from './helpers/robot.js';
import { readCa, startServer, type ServerProcess } from './helpers/server-process.js';
import { REPO } from './helpers/tools.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/** `--workers 2`: two server processes on one port and one SQLite file, as `npm start` runs them. */
describe('several workers on one host', () => {
  let dir: string;
  let server: ServerProcess;
  let ca: string;
  let admin: string;

  /** Each request on a connection of its own, so the primary deals them out to both workers in turn. */
  const call = (method: string, p: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const data = opts.body === undefined ? undefined : JSON.stringify(opts.body);
      const req = https.request(
        new URL(p, server.url),
        {
          method,
          ca,
          agent: false,
          headers: {
            ...(data ? { 'content-type': 'application/json' } : {}),
            ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
            ...opts.headers,
          },
        },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
        },
      );
      req.on('error', reject);
      req.end(data);
    });

  /** The worker processes, as the kernel lists the primary's children. */
  const workerPids = (): number[] => {
    const pid = server.child.pid!;
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  };
  const until = async (what: string, ok: () => boolean | Promise<boolean>, ms = 20_000) => {
    const end = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${server.logs().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-workers-'));
    // The change log's own poll an hour away: a change reaches the other worker only if the workers tell each other.
    server = await startServer(['--data-dir', path.join(dir, 'data'), '--listen', '127.0.0.1:0', '--workers', '2'], {
      ENCLAVE_CHANGE_POLL_MS: '3600000',
      ENCLAVE_LOG_LEVEL: 'debug',
    });
    await until('both workers', () => server.logs().includes('"msg":"all workers listening"'));
    ca = readCa(path.join(dir, 'data'));
    // Made once, by the primary, before any worker served.
    const password = fs.readFileSync(path.join(dir, 'data', 'initial-admin-password'), 'utf8').trim();
    admin = (await call('POST', '/v1/auth/login', { body: { username: 'admin', password } })).body.token;
    assert.ok(admin);
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a change made through one worker reaches the robots long-polling on either at once', async () => {
    assert.equal(workerPids().length, 2);
    assert.equal((await call('POST', '/v1/keystores', { token: admin, body: { name: 'ks' } })).status, 201);
    assert.equal((await call('POST', '/v1/keystores/ks/enclaves:batch', { token: admin, body: { paths: ['/nav'] } })).status, 201);
    assert.equal((await call('POST', '/v1/bindings', { token: admin, body: { keystore: 'ks', enclave: '/nav', selector: { fleet: 'w' } } })).status, 201);
    const robots: { name: string; token: string; revision: string }[] = [];
    for (let i = 0; i < 6; i++) {
      const name = `w${i}`;
      assert.equal((await call('POST', '/v1/robots', { token: admin, body: { name, labels: { fleet: 'w' } } })).status, 201);
      const enrollment = (await call('POST', `/v1/robots/${name}/enrollment-tokens`, { token: admin, body: {} })).body.token;
      const key = deviceKey();
      assert.equal((await call('POST', '/v1/enroll', { body: { token: enrollment, publicKey: key.publicKeyPem } })).status, 201);
      const boot = await call('POST', '/v1/auth/robot', { body: { assertion: assertion(name, key), bundle: true } });
      assert.equal(boot.status, 200);
      robots.push({ name, token: boot.body.token, revision: boot.body.bundle.revision });
    }
    const polls = robots.map((r) =>
      call('GET', '/v1/robot/bundle?wait=30', { token: r.token, headers: { 'if-none-match': `"${r.revision}"` } }).then((a) => ({ ...a, at: Date.now() })),
    );
    // Every poll is parked before the change (each worker logs nothing for a parked poll; its connection is open).
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    assert.equal((await call('POST', '/v1/keystores/ks/enclaves/nav/rotate', { token: admin })).status, 200);
    const answers = await Promise.all(polls);
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.ok(a.at - t0 < 10_000, `answered ${a.at - t0} ms after the change`);
    }
    // Both workers held polls and answered them: each logs its answers (at debug) under its own number.
    const answeredBy = () =>
      server
        .logs()
        .split('\n')
        .filter((l) => l.includes('"path":"/v1/robot/bundle"') && l.includes('"status":200'))
        .map((l) => JSON.parse(l) as { worker: number });
    await until('the answers logged', () => answeredBy().length === robots.length);
    assert.deepEqual([...new Set(answeredBy().map((l) => l.worker))].sort(), [1, 2]);
  });

  test('writes from both workers at once keep one audit chain', async () => {
    const made = await Promise.all(Array.from({ length: 16 }, (_, i) => call('POST', '/v1/robots', { token: admin, body: { name: `c${i}`, labels: {} } })));
    assert.deepEqual(
      made.map((m) => m.status),
      Array(16).fill(201),
    );
    const verdict = (await call('GET', '/v1/audit/verify', { token: admin })).body;
    assert.equal(verdict.ok, true, JSON.stringify(verdict));
  });

  test('/metrics counts every worker\'s requests, whichever worker a scrape reaches', async () => {
    // 6 robots in the first test, 16 in the second, made through both workers.
    const created = /^enclave_http_requests_total\{method="POST",route="\/v1\/robots",status="201"\} (\d+)$/m;
    for (let i = 0; i < 4; i++) {
      const text = await new Promise<string>((resolve, reject) => {
        https.get(new URL('/metrics', server.url), { ca, agent: false }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve(body));
        }).on('error', reject);
      });
      assert.equal(created.exec(text)?.[1], '22', text.slice(0, 2000));
    }
  });

  test('a worker that dies is replaced; SIGTERM stops the primary and every worker', async () => {
    const [victim, survivor] = workerPids();
    process.kill(victim!, 'SIGKILL');
    await until('a new worker', () => {
      const pids = workerPids();
      return pids.length === 2 && !pids.includes(victim!) && pids.includes(survivor!);
    });
    await until('the new worker listening', () => server.logs().split('"msg":"all workers listening"').length > 2);
    for (let i = 0; i < 4; i++) assert.equal((await call('GET', '/health')).status, 200);
    const pids = workerPids();
    assert.equal(await server.stop('SIGTERM'), 0);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), 'the worker is gone too');
  });
});

describe('--workers', () => {
  test('a count, auto (one per core) or ENCLAVE_WORKERS; anything else stops the start naming the setting', () => {
    assert.equal(parseCommandLine([], {}).config.workers, 1);
    assert.equal(parseCommandLine(['--workers', '3'], {}).config.workers, 3);
    assert.equal(parseCommandLine([], { ENCLAVE_WORKERS: 'auto' }).config.workers, os.availableParallelism());
    assert.equal(parseCommandLine(['--workers', '2'], { ENCLAVE_WORKERS: '5' }).config.workers, 2, 'the flag wins');
    for (const bad of ['0', '-1', 'two', '1.5', '65']) assert.throws(() => parseCommandLine(['--workers', bad], {}), ConfigError, bad);
    assert.equal(parseCommandLine([], { ENCLAVE_CHANGE_POLL_MS: '250' }).config.changePollMs, 250);
    assert.throws(() => parseCommandLine([], { ENCLAVE_CHANGE_POLL_MS: 'often' }), /ENCLAVE_CHANGE_POLL_MS must be a positive integer/);
  });

  test('workers that cannot listen stop the primary with an error, not a restart loop', async () => {
    const taken = net.createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-workers-'));
    try {
      const run = spawnSync(
        process.execPath,
        ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), '--data-dir', path.join(dir, 'data'), '--listen', `127.0.0.1:${(taken.address() as net.AddressInfo).port}`, '--workers', '2'],
        { cwd: REPO, encoding: 'utf8', timeout: 60_000, env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: '', ENCLAVE_ADMIN_PASSWORD_FILE: '' } },
      );
      assert.equal(run.status, 1, run.stdout + run.stderr);
      assert.match(run.stderr, /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);
      assert.match(run.stdout, /a worker failed to start/);
    } finally {
      taken.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
