import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { LoadMonitor, retryAfterSeconds } from '../server/http/overload.js';
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
  test('Retry-After grows with the lag, is spread at random, and stays bounded', () => {
    assert.equal(retryAfterSeconds(250, () => 0), 2);
    assert.equal(retryAfterSeconds(250, () => 0.999), 4);
    assert.equal(retryAfterSeconds(1000, () => 0), 5);
    assert.equal(retryAfterSeconds(1000, () => 0.999), 10);
    for (const lag of [1, 300, 5_000, 1e9]) {
      for (const r of [0, 0.5, 0.999]) {
        const s = retryAfterSeconds(lag, () => r);
        assert.ok(Number.isInteger(s) && s >= 1 && s <= 30, `${lag} ms, ${r}: ${s}`);
      }
    }
  });

  test('one long task is not saturation; repeated stalls are, until the loop is quiet again', async () => {
    const monitor = new LoadMonitor({ lagMs: 250, holdMs: 1000 });
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

  test('lagMs 0 never sheds', async () => {
    const monitor = new LoadMonitor({ lagMs: 0, holdMs: 1000 });
    await saturate(400);
    assert.equal(monitor.lag(), 0);
    monitor.close();
  });

  describe('over HTTP', () => {
    let ctx: TestContext;
    let admin: string;
    let key: DeviceKey;

    before(async () => {
      ctx = await makeTestApp({ overload: { lagMs: 250, holdMs: 3000 } });
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
      await until(() => ctx.services.load.lag() === 0, 'quiet');
      const again = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200);
      ctx.secrets.add(again.body.token);
    });
  });
});
