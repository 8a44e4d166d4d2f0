import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import request from 'supertest';
import { LoadMonitor, retryAfterSeconds, watchHandshakes } from '../server/http/overload.js';
import { makeTestCa } from './helpers/agent-tls.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';

/** Keeps the event loop busy for `ms`, as a flood of handshakes and logins does. */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

const turn = () => new Promise<void>((r) => setTimeout(r, 40));

/** Two long stalls with a timer turn between them: the monitor's tick comes late twice. */
async function saturate(stallMs: number): Promise<void> {
  busy(stallMs);
  await turn();
  busy(stallMs);
  await turn();
}

async function until(check: () => boolean, what: string, limitMs = 15_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`still not ${what} after ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('overload: new robot work is shed early while the event loop is saturated', () => {
  test('Retry-After is about as long as the server is behind, spread at random, and stays bounded', () => {
    assert.equal(retryAfterSeconds(250, () => 0), 1);
    assert.equal(retryAfterSeconds(250, () => 0.999), 2);
    assert.equal(retryAfterSeconds(6000, () => 0), 6);
    assert.equal(retryAfterSeconds(6000, () => 0.999), 12);
    for (const lag of [1, 300, 5_000, 1e9]) {
      for (const r of [0, 0.5, 0.999]) {
        const s = retryAfterSeconds(lag, () => r);
        assert.ok(Number.isInteger(s) && s >= 1 && s <= 30, `${lag} ms, ${r}: ${s}`);
      }
    }
  });

  test('one long task is not saturation; repeated stalls are, until the loop is quiet again', async () => {
    const monitor = new LoadMonitor({ lagMs: 250, holdMs: 1000, queueMs: 0 });
    try {
      busy(600);
      await turn();
      assert.equal(monitor.lag(), 0, 'a single stall (an import, a large batch) does not shed anyone');
      await saturate(600);
      assert.ok(monitor.lag() > 250, `lag ${monitor.lag()}`);
      await until(() => monitor.lag() === 0, 'quiet');
    } finally {
      monitor.close();
    }
  });

  test('handshakes: saturated when at least half of a second\'s handshakes (10 or more) waited longer than queueMs', () => {
    let now = 0;
    const monitor = new LoadMonitor({ lagMs: 0, holdMs: 1000, queueMs: 1000 }, () => now);
    for (let i = 0; i < 9; i++) monitor.noteHandshake(3000);
    assert.equal(monitor.lag(), 0, 'nine handshakes say nothing yet');
    now = 1000; // a new window
    for (let i = 0; i < 6; i++) monitor.noteHandshake(5);
    for (let i = 0; i < 4; i++) monitor.noteHandshake(4000);
    assert.equal(monitor.lag(), 0, 'four slow of ten: robots on slow links, not a queue');
    monitor.noteHandshake(2500);
    assert.equal(monitor.lag(), 0, 'five slow of eleven');
    monitor.noteHandshake(2500);
    assert.equal(monitor.lag(), 4000, 'six slow of twelve: the slowest wait sets the back-off');
    now = 1999;
    assert.equal(monitor.lag(), 4000);
    now = 2001;
    assert.equal(monitor.lag(), 0, 'holdMs after the last judgement');
    const off = new LoadMonitor({ lagMs: 0, holdMs: 1000, queueMs: 0 }, () => now);
    for (let i = 0; i < 20; i++) off.noteHandshake(60_000);
    assert.equal(off.lag(), 0, 'queueMs 0: never');
  });

  test('lagMs 0 never sheds', async () => {
    const monitor = new LoadMonitor({ lagMs: 0, holdMs: 1000, queueMs: 0 });
    await saturate(400);
    assert.equal(monitor.lag(), 0);
    monitor.close();
  });

  describe('over HTTP', () => {
    let ctx: TestContext;
    let admin: string;
    let key: DeviceKey;

    before(async () => {
      ctx = await makeTestApp({ overload: { lagMs: 250, holdMs: 3000, queueMs: 0 } });
      admin = await ctx.adminToken();
      await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'r1', labels: {} }).expect(201);
      const t = await request(ctx.app).post('/v1/robots/r1/enrollment-tokens').set(bearer(admin)).send({});
      ctx.secrets.add(t.body.token);
      key = deviceKey();
      await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    });
    after(async () => {
      ctx.services.bundles.close();
      ctx.services.load.close();
      await ctx.close();
    });

    test('a robot login takes the fast path and answers like the general stack: headers, refusals, bad bodies', async () => {
      const fast = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200);
      // A query string sends the same request down the general middleware stack.
      const general = await request(ctx.app).post('/v1/auth/robot?via=general').send({ assertion: assertion('r1', key) }).expect(200);
      ctx.secrets.add(fast.body.token);
      ctx.secrets.add(general.body.token);
      const volatile = new Set(['date', 'x-request-id', 'connection', 'keep-alive', 'content-length', 'etag']);
      const headersOf = (r: request.Response) => Object.keys(r.headers).filter((k) => !volatile.has(k)).sort();
      assert.deepEqual(headersOf(fast), headersOf(general));
      assert.deepEqual(Object.keys(fast.body).sort(), ['expiresAt', 'token']);
      for (const path of ['/v1/auth/robot', '/v1/auth/robot?via=general']) {
        const replay = assertion('r1', key);
        await request(ctx.app).post(path).send({ assertion: replay }).then((r) => ctx.secrets.add(r.body.token));
        const again = await request(ctx.app).post(path).send({ assertion: replay });
        assert.deepEqual([again.status, again.body.error.code], [401, 'invalid-assertion'], path);
        const junk = await request(ctx.app).post(path).set('Content-Type', 'application/json').send('{"assertion":');
        assert.deepEqual([junk.status, junk.body.error.code], [400, 'invalid-json'], path);
        const extra = await request(ctx.app).post(path).send({ assertion: assertion('r1', key), role: 'admin' });
        assert.equal(extra.status, 422, path);
      }
      const metrics = (await request(ctx.app).get('/metrics')).text;
      assert.match(metrics, /enclave_http_requests_total\{method="POST",route="\/v1\/auth\/robot",status="401"\} 2/);
    });

    test('a robot report takes the fast path and answers like the general stack: headers, stored, refusals, bad bodies', async () => {
      const login = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200);
      ctx.secrets.add(login.body.token);
      const report = { revision: 'r-fast', filesystem: 'tmpfs', clockSkewMs: 5, agentVersion: '0.1.0', enclaves: [] };
      const fast = await request(ctx.app).post('/v1/robot/report').set(bearer(login.body.token)).send(report).expect(204);
      assert.equal((await request(ctx.app).get('/v1/robots/r1').set(bearer(admin))).body.report.revision, 'r-fast');
      // A query string sends the same request down the general middleware stack.
      const general = await request(ctx.app).post('/v1/robot/report?via=general').set(bearer(login.body.token)).send({ ...report, revision: 'r-general' }).expect(204);
      assert.equal((await request(ctx.app).get('/v1/robots/r1').set(bearer(admin))).body.report.revision, 'r-general');
      const volatile = new Set(['date', 'x-request-id', 'connection', 'keep-alive']);
      const headersOf = (r: request.Response) => Object.keys(r.headers).filter((k) => !volatile.has(k)).sort();
      assert.deepEqual(headersOf(fast), headersOf(general));
      for (const path of ['/v1/robot/report', '/v1/robot/report?via=general']) {
        const forged = await request(ctx.app).post(path).set(bearer(`${login.body.token}x`)).send(report);
        assert.deepEqual([forged.status, forged.body.error.code], [401, 'invalid-token'], path);
        const junk = await request(ctx.app).post(path).set(bearer(login.body.token)).set('Content-Type', 'application/json').send('{"revision":');
        assert.deepEqual([junk.status, junk.body.error.code], [400, 'invalid-json'], path);
        const bad = await request(ctx.app).post(path).set(bearer(login.body.token)).send({ ...report, clockSkewMs: 'soon' });
        assert.deepEqual([bad.status, bad.body.error.code], [422, 'invalid-input'], path);
      }
      const metrics = (await request(ctx.app).get('/metrics')).text;
      assert.match(metrics, /enclave_http_requests_total\{method="POST",route="\/v1\/robot\/report",status="204"\} 2/);
      assert.match(metrics, /enclave_http_requests_total\{method="POST",route="\/v1\/robot\/report",status="422"\} 2/);
    });

    test('robot logins get 503 + Retry-After while saturated; health, admins and robots with a token carry on', async () => {
      const login = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200);
      ctx.secrets.add(login.body.token);
      await saturate(600);
      const shed = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) });
      assert.equal(shed.status, 503, JSON.stringify(shed.body));
      assert.equal(shed.body.error.code, 'overloaded');
      const wait = Number(shed.headers['retry-after']);
      assert.ok(Number.isInteger(wait) && wait >= 1 && wait <= 30, `Retry-After ${shed.headers['retry-after']}`);
      assert.match(shed.body.error.message, new RegExp(`retry in ${wait} s`));
      assert.equal((await request(ctx.app).post('/v1/enroll').send({ token: 'x'.repeat(43), publicKey: key.publicKeyPem })).status, 503);
      await request(ctx.app).get('/health').expect(200);
      await request(ctx.app).get('/v1/keystores').set(bearer(admin)).expect(200);
      await request(ctx.app).get('/v1/robot/bundle').set(bearer(login.body.token)).expect(200);
      // A report is new robot work: it waits too, whichever way it comes in.
      for (const path of ['/v1/robot/report', '/v1/robot/report?via=general']) {
        const report = await request(ctx.app).post(path).set(bearer(login.body.token)).send({ revision: 'r' });
        assert.deepEqual([report.status, report.body.error?.code], [503, 'overloaded'], path);
      }
      await until(() => ctx.services.load.lag() === 0, 'quiet');
      const again = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200);
      ctx.secrets.add(again.body.token);
    });
  });

  describe('handshakes that waited, over real TLS', () => {
    let ctx: TestContext;
    let server: https.Server;
    let key: DeviceKey;
    let dir: string;

    before(async () => {
      ctx = await makeTestApp({ overload: { lagMs: 0, holdMs: 2000, queueMs: 300 } });
      const admin = await ctx.adminToken();
      await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'r2', labels: {} }).expect(201);
      const t = await request(ctx.app).post('/v1/robots/r2/enrollment-tokens').set(bearer(admin)).send({});
      ctx.secrets.add(t.body.token);
      key = deviceKey();
      await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-handshakes-'));
      const ca = makeTestCa(dir, 'localhost');
      server = https.createServer({ cert: ca.caPem, key: fs.readFileSync(path.join(dir, 'ca.key')) }, ctx.app);
      watchHandshakes(server, ctx.services.load);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    });
    after(async () => {
      await new Promise((resolve) => server.close(resolve));
      ctx.services.bundles.close();
      ctx.services.load.close();
      await ctx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    /** A connection accepted now whose handshake starts `delayMs` later: what a queue in front of it does. */
    const lateHandshake = (delayMs: number) =>
      new Promise<void>((resolve, reject) => {
        const port = (server.address() as net.AddressInfo).port;
        const raw = net.connect(port, '127.0.0.1', () => {
          setTimeout(() => {
            const secure = tls.connect({ socket: raw, rejectUnauthorized: false }, () => {
              secure.end();
              resolve();
            });
            secure.on('error', reject);
          }, delayMs);
        });
        raw.on('error', reject);
      });

    const login = () =>
      new Promise<{ status: number; retryAfter?: string }>((resolve, reject) => {
        const body = JSON.stringify({ assertion: assertion('r2', key) });
        const req = https.request(
          { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, path: '/v1/auth/robot', method: 'POST', rejectUnauthorized: false, agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
          (res) => {
            let text = '';
            res.on('data', (c) => (text += c));
            res.on('end', () => {
              if (res.statusCode === 200) ctx.secrets.add(JSON.parse(text).token);
              resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined });
            });
          },
        );
        req.on('error', reject);
        req.end(body);
      });

    test('robot logins are shed (503 + Retry-After) once most handshakes wait, and served again when they do not', async () => {
      assert.equal((await login()).status, 200, 'fresh handshakes: served');
      await Promise.all(Array.from({ length: 12 }, () => lateHandshake(400)));
      const shed = await login();
      assert.equal(shed.status, 503);
      assert.ok(Number(shed.retryAfter) >= 1, `Retry-After ${shed.retryAfter}`);
      await until(() => ctx.services.load.lag() === 0, 'quiet');
      assert.equal((await login()).status, 200);
    });
  });
});
