/**
 * Two real server processes on one PostgreSQL database, as in docker-compose.ha.yml without the balancer: what
 * one replica does, the other knows. Runs when ENCLAVE_TEST_DATABASE_URL is set (`.ci/run` starts a throw-away
 * cluster); it always runs on PostgreSQL, so the PostgreSQL half of the store matrix does not run it again.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HttpClient, parseJson, type HttpResponse } from '../client/common/http.js';
import { Admin, startServer, type RealServer } from './helpers/agent-server.js';
import { freshDatabase, NO_POSTGRES, TEST_STORE, type TestDatabase } from './helpers/postgres.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';

const skip = NO_POSTGRES || (TEST_STORE === 'postgres' ? 'runs on PostgreSQL in the first half of the store matrix already' : false);

const POLICY = `<?xml version="1.0" encoding="UTF-8"?>
<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude">
  <enclaves><enclave path="/fleet/driver"><profiles><profile ns="/" node="driver">
    <topics publish="ALLOW"><topic>cmd_vel</topic></topics>
  </profile></profiles></enclave></enclaves>
</policy>`;

describe('two replicas on one PostgreSQL database', { skip, timeout: 240_000 }, () => {
  let root: string;
  let database: TestDatabase;
  let env: NodeJS.ProcessEnv;
  let a: RealServer;
  let b: RealServer;
  let adminA: Admin;
  let adminB: Admin;

  const start = (name: string) => startServer({ dataDir: path.join(root, name), env });
  const client = (s: RealServer) => new HttpClient(s.url, fs.readFileSync(s.caFile!, 'utf8'));
  async function call(s: RealServer, method: 'GET' | 'POST', p: string, opts: { json?: unknown; token?: string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<HttpResponse> {
    const c = client(s);
    try {
      return await c.request({
        method,
        path: p.replace(/^\//, ''),
        json: opts.json,
        headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...opts.headers },
        timeoutMs: opts.timeoutMs ?? 30_000,
      });
    } finally {
      c.close();
    }
  }
  async function enroll(s: RealServer, robot: string): Promise<DeviceKey> {
    await adminA.createRobot(robot, { site: 'replicas' });
    const token = await adminA.enrollmentToken(robot);
    const key = deviceKey();
    const res = await call(s, 'POST', '/v1/enroll', { json: { token, publicKey: key.publicKeyPem } });
    assert.equal(res.status, 201, res.body.toString());
    return key;
  }
  async function robotToken(s: RealServer, robot: string, key: DeviceKey): Promise<string> {
    const res = await call(s, 'POST', '/v1/auth/robot', { json: { assertion: assertion(robot, key) } });
    assert.equal(res.status, 200, res.body.toString());
    return (parseJson(res) as { token: string }).token;
  }

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-replicas-'));
    database = await freshDatabase('replicas');
    const secrets = path.join(root, 'secrets');
    fs.mkdirSync(secrets, { mode: 0o700 });
    fs.writeFileSync(path.join(secrets, 'master.key'), crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
    fs.writeFileSync(path.join(secrets, 'token.secret'), crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
    env = {
      ENCLAVE_DATABASE_URL: database.url,
      ENCLAVE_MASTER_KEY_FILE: path.join(secrets, 'master.key'),
      ENCLAVE_TOKEN_SECRET_FILE: path.join(secrets, 'token.secret'),
    };
    // Started together: both migrate under the advisory lock and both may try to create the first admin.
    [a, b] = await Promise.all([start('a'), start('b')]);
    adminA = await Admin.login(a);
    adminB = await Admin.login(b);
    await adminA.createKeystore('ks');
    await adminA.createEnclave('ks', '/fleet/driver', POLICY);
  });

  after(async () => {
    adminA?.close();
    adminB?.close();
    await a?.stop();
    await b?.stop();
    await database?.drop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('both started on one database at once: one administrator, one migration history', async () => {
    const users = await adminB.call<{ users: { name: string }[] }>('GET', '/v1/users');
    assert.deepEqual(users.users.map((u) => u.name), ['admin']);
  });

  test('a token from A is valid on B, and what A wrote B reads', async () => {
    const login = await call(a, 'POST', '/v1/auth/login', { json: { username: 'admin', password: 'agent-e2e-admin-password-123' } });
    const { token } = parseJson(login) as { token: string };
    const onB = await call(b, 'GET', '/v1/keystores/ks/enclaves/fleet/driver', { token });
    assert.equal(onB.status, 200, onB.body.toString());
  });

  test('a robot assertion used on A is refused on B (replay)', async () => {
    const key = await enroll(a, 'replay-bot');
    const jws = assertion('replay-bot', key);
    assert.equal((await call(a, 'POST', '/v1/auth/robot', { json: { assertion: jws } })).status, 200);
    const again = await call(b, 'POST', '/v1/auth/robot', { json: { assertion: jws } });
    assert.equal(again.status, 401, again.body.toString());
  });

  test('one enrollment token raced on A and B: exactly one winner', async () => {
    for (let round = 0; round < 5; round++) {
      const robot = `race-${round}`;
      await adminA.createRobot(robot);
      const token = await adminA.enrollmentToken(robot);
      const enrollOn = (s: RealServer) => call(s, 'POST', '/v1/enroll', { json: { token, publicKey: deviceKey().publicKeyPem } });
      const [ra, rb] = await Promise.all([enrollOn(a), enrollOn(b)]);
      assert.deepEqual([ra.status, rb.status].sort(), [201, 401], `${ra.status} ${rb.status}`);
    }
  });

  test('a rotation on A reaches a robot long-polling on B within a second', async () => {
    const key = await enroll(b, 'poll-bot');
    await adminA.bind('ks', '/fleet/driver', 'poll-bot');
    const token = await robotToken(b, 'poll-bot', key);
    const first = await call(b, 'GET', '/v1/robot/bundle', { token });
    assert.equal(first.status, 200);
    const etag = first.headers.etag!;
    const waiting = call(b, 'GET', '/v1/robot/bundle?wait=30', { token, headers: { 'if-none-match': etag }, timeoutMs: 40_000 });
    // The poll is held on B before the change is made on A.
    await new Promise((r) => setTimeout(r, 300));
    await adminA.rotate('ks', '/fleet/driver');
    const rotatedAt = Date.now();
    const answer = await waiting;
    const tookMs = Date.now() - rotatedAt;
    assert.equal(answer.status, 200);
    assert.notEqual(answer.headers.etag, etag);
    assert.ok(tookMs <= 1000, `the rotation reached B's waiting robot after ${tookMs} ms`);
    // Revisions are content hashes: both replicas name the new bundle the same.
    const onA = await call(a, 'GET', '/v1/robot/bundle', { token });
    assert.equal(onA.headers.etag, answer.headers.etag);
  });

  test('200 concurrent writes spread over A and B: one audit chain that verifies', async () => {
    const writes = Array.from({ length: 200 }, (_, i) => (i % 2 ? adminA : adminB).createRobot(`w-${i}`, { batch: 'concurrent' }));
    await Promise.all(writes);
    for (const s of [adminA, adminB]) {
      const verdict = await s.call<{ ok: boolean; entries: number }>('GET', '/v1/audit/verify');
      assert.equal(verdict.ok, true, JSON.stringify(verdict));
    }
    const robots = await adminB.call<{ robots: { name: string }[] }>('GET', '/v1/robots');
    assert.equal(robots.robots.filter((r) => r.name.startsWith('w-')).length, 200);
  });

  test('SIGKILL of A during a write storm: every acknowledged write is there, B keeps serving', async () => {
    const acknowledged: string[] = [];
    let stop = false;
    const storm = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          await adminA.createRobot(`k-${i}`);
          acknowledged.push(`k-${i}`);
        } catch {
          return; // A is gone
        }
      }
    })();
    while (acknowledged.length < 20) await new Promise((r) => setTimeout(r, 20));
    await a.stop('SIGKILL');
    stop = true;
    await storm;
    const robots = await adminB.call<{ robots: { name: string }[] }>('GET', '/v1/robots');
    const names = new Set(robots.robots.map((r) => r.name));
    const missing = acknowledged.filter((n) => !names.has(n));
    assert.deepEqual(missing, [], `${missing.length} of ${acknowledged.length} acknowledged writes are missing`);
    await adminB.createRobot('after-kill');
    const verdict = await adminB.call<{ ok: boolean }>('GET', '/v1/audit/verify');
    assert.equal(verdict.ok, true);
  });
});
