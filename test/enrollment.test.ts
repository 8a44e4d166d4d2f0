import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';
import { Unauthorized } from '../server/errors.js';

describe('robot enrollment', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });
  const count = async (c: TestContext, text: string, params: (string | number)[] = []) =>
    Number((await c.store.read((r) => r.sql.get<{ n: number | string }>(text, params)))!.n);

  const token = async (robot: string, ttlSeconds?: number, reenroll?: boolean) => {
    const res = await request(ctx.app)
      .post(`/v1/robots/${robot}/enrollment-tokens`)
      .set(bearer(admin))
      .send({ ...(ttlSeconds ? { ttlSeconds } : {}), ...(reenroll ? { reenroll } : {}) });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    ctx.secrets.add(res.body.token);
    return res.body as { token: string; expiresAt: string; reenroll: boolean };
  };
  const enroll = (t: { token: string }, key = deviceKey()) => request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: key.publicKeyPem });
  const login = (robot: string, key: ReturnType<typeof deviceKey>) => request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(robot, key) });

  test('tokens default to one hour and are stored hashed', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'solo', labels: { site: 'lab' } }).expect(201);
    const t = await token('solo');
    const ttl = Date.parse(t.expiresAt) - Date.now();
    assert.ok(ttl > 3590_000 && ttl <= 3600_000);
    const stored = (await ctx.store.read((r) => r.sql.all<{ token_hash: string }>('SELECT token_hash FROM enrollment_tokens'))).map((r) => r.token_hash);
    assert.ok(stored.length > 0);
    assert.ok(stored.every((h) => /^[0-9a-f]{64}$/.test(h) && h !== t.token));
  });

  test('200 concurrent enrollments with 200 tokens all succeed', async () => {
    const names = Array.from({ length: 200 }, (_, i) => `bot-${i}`);
    for (const name of names) await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name, labels: {} }).expect(201);
    const tokens = await Promise.all(names.map((n) => token(n)));
    const results = await Promise.all(
      names.map((n, i) => request(ctx.app).post('/v1/enroll').send({ token: tokens[i]!.token, publicKey: deviceKey(i % 2 ? 'ed25519' : 'p256').publicKeyPem })),
    );
    assert.deepEqual(results.map((r) => r.status), names.map(() => 201));
    assert.deepEqual(results.map((r) => r.body.robot.name).sort(), [...names].sort());
    const enrolled = await count(ctx, 'SELECT count(*) AS n FROM robots WHERE key_id IS NOT NULL AND name LIKE ?', ['bot-%']);
    assert.equal(enrolled, 200);
  });

  test('50 concurrent attempts to reuse one token: exactly one wins', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'contested', labels: {} }).expect(201);
    const t = await token('contested');
    const keys = Array.from({ length: 50 }, () => deviceKey());
    const results = await Promise.all(keys.map((k) => request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: k.publicKeyPem })));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 201).length, 1);
    assert.equal(statuses.filter((s) => s === 401).length, 49);
    // The winner's key is the registered one: it can log in; the others cannot.
    const winner = keys[statuses.indexOf(201)]!;
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('contested', winner) })).status, 200);
    const loser = keys[statuses.indexOf(401)]!;
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('contested', loser) })).status, 401);
  });

  test('an expired token is refused', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'late', labels: {} }).expect(201);
    const t = await token('late', 60);
    await ctx.store.tx((r) => r.sql.run("UPDATE enrollment_tokens SET expires_at = '2000-01-01T00:00:00.000Z' WHERE robot = 'late'"));
    const res = await request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: deviceKey().publicKeyPem });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, 'invalid-enrollment-token');
  });

  test('re-enrollment needs a token minted for it; it replaces the key, and the old key and its tokens stop working', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'phoenix', labels: {} }).expect(201);
    const k1 = deviceKey();
    await enroll(await token('phoenix'), k1).expect(201);
    const t1 = (await login('phoenix', k1)).body.token;
    ctx.secrets.add(t1);
    assert.equal((await request(ctx.app).get('/v1/robot/bundle').set(bearer(t1))).status, 200);
    const plain = await request(ctx.app).post('/v1/robots/phoenix/enrollment-tokens').set(bearer(admin)).send({});
    assert.equal(plain.status, 409, 'an enrolled robot gets a token only when re-enrollment is asked for');
    assert.equal(plain.body.error.code, 'robot-enrolled');
    assert.match(plain.body.error.message, /--reenroll/);
    const again = await token('phoenix', undefined, true);
    assert.equal(again.reenroll, true);
    const shown = await request(ctx.app).get('/v1/robots/phoenix').set(bearer(admin));
    assert.deepEqual(shown.body.enrollmentTokens.map((e: { reenroll: boolean }) => e.reenroll), [true], 'outstanding re-enrollment token shown as such');
    const k2 = deviceKey('ed25519');
    await enroll(again, k2).expect(201);
    assert.equal((await request(ctx.app).get('/v1/robot/bundle').set(bearer(t1))).status, 401, 'old robot token');
    assert.equal((await login('phoenix', k1)).status, 401, 'old key');
    assert.equal((await login('phoenix', k2)).status, 200, 'new key');
    assert.deepEqual((await request(ctx.app).get('/v1/robots/phoenix').set(bearer(admin))).body.enrollmentTokens, []);
  });

  // A security review: unused tokens survived enrollment and revoke-key, and enrolling an enrolled robot
  // silently replaced its key, so an attacker holding a second token could take the robot over.
  test('enrolling burns every other outstanding token of the robot', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'twin', labels: {} }).expect(201);
    const first = await token('twin');
    const second = await token('twin');
    const owner = deviceKey();
    await enroll(first, owner).expect(201);
    const takeover = await enroll(second);
    assert.equal(takeover.status, 401, 'the second token died with the enrollment');
    assert.equal((await login('twin', owner)).status, 200, 'the robot keeps its key');
  });

  test('revoke-key and robot deletion burn outstanding tokens', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'stolen', labels: {} }).expect(201);
    await enroll(await token('stolen')).expect(201);
    const pending = await token('stolen', undefined, true);
    const revoked = await request(ctx.app).post('/v1/robots/stolen/revoke-key').set(bearer(admin)).expect(200);
    assert.equal(revoked.body.enrolled, false);
    assert.equal((await enroll(pending)).status, 401, 'a token minted before revoke-key is dead');
    await enroll(await token('stolen')).expect(201);

    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'gone', labels: {} }).expect(201);
    const orphan = await token('gone');
    await request(ctx.app).delete('/v1/robots/gone').set(bearer(admin)).expect(204);
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'gone', labels: {} }).expect(201);
    assert.equal((await enroll(orphan)).status, 401, 'a token of a deleted robot does not enroll its namesake');
  });

  test('revoking the device key ends access at once', async () => {
    const k = deviceKey();
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'lost', labels: {} }).expect(201);
    await request(ctx.app).post('/v1/enroll').send({ token: (await token('lost')).token, publicKey: k.publicKeyPem }).expect(201);
    const t = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('lost', k) })).body.token;
    ctx.secrets.add(t);
    await request(ctx.app).post('/v1/robots/lost/revoke-key').set(bearer(admin)).expect(200);
    assert.equal((await request(ctx.app).get('/v1/robot/bundle').set(bearer(t))).status, 401);
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('lost', k) })).status, 401);
  });

  test('bad public keys → 422', async () => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'rsa', labels: {} }).expect(201);
    const t = await token('rsa');
    const crypto = await import('node:crypto');
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const res = await request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: rsa });
    assert.equal(res.status, 422);
    assert.equal(res.body.error.code, 'invalid-public-key');
    const garbage = await request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: 'x'.repeat(100) });
    assert.equal(garbage.status, 422);
    // The token survived the failed attempts.
    assert.equal((await request(ctx.app).post('/v1/enroll').send({ token: t.token, publicKey: deviceKey().publicKeyPem })).status, 201);
  });

  /** A fresh app of its own, closed after `fn`: each counts failures per address from zero. */
  const withOwnApp = async (fn: (c: TestContext) => Promise<void>) => {
    const own = await makeTestApp();
    try {
      await fn(own);
    } finally {
      own.services.bundles.close();
      await own.close();
    }
  };
  /** A new robot in `c` and an enrollment token for it. */
  const robotWithToken = async (c: TestContext, name: string): Promise<string> => {
    const a = bearer(await c.adminToken());
    await request(c.app).post('/v1/robots').set(a).send({ name, labels: {} }).expect(201);
    const t = (await request(c.app).post(`/v1/robots/${name}/enrollment-tokens`).set(a).send({}).expect(201)).body.token as string;
    c.secrets.add(t);
    return t;
  };

  test('unauthenticated failures are limited per address, and never block a valid credential', () =>
    withOwnApp(async (limited) => {
      const good = await robotWithToken(limited, 'behind-nat');
      const statuses: number[] = [];
      for (let i = 0; i < 102; i++) {
        statuses.push((await request(limited.app).post('/v1/enroll').send({ token: `et_${'x'.repeat(20)}${i}`, publicKey: deviceKey().publicKeyPem })).status);
      }
      assert.equal(statuses.filter((s) => s === 401).length, 100);
      assert.deepEqual(statuses.slice(100), [429, 429]);
      assert.equal((await request(limited.app).post('/v1/auth/robot').send({ assertion: assertion('x', deviceKey()) })).status, 429);
      const audited = await count(limited, "SELECT count(*) AS n FROM audit_log WHERE result = 'failure' AND action = 'robot.enroll'");
      assert.equal(audited, 100, 'failures past the limit are not written one by one');
      // A whole fleet shares this address (NAT, or the TLS proxy): its valid credentials still work.
      const key = deviceKey();
      assert.equal((await request(limited.app).post('/v1/enroll').send({ token: good, publicKey: key.publicKeyPem })).status, 201);
      const ok = await request(limited.app).post('/v1/auth/robot').send({ assertion: assertion('behind-nat', key) });
      assert.equal(ok.status, 200);
      limited.secrets.add(ok.body.token);
    }));

  // Its own app: the failures of the tests above count against this address's allowance.
  test('one assertion sent twenty times at once: one login, nineteen replays refused and audited', () =>
    withOwnApp(async (own) => {
      const t = await robotWithToken(own, 'replayer');
      const key = deviceKey();
      await request(own.app).post('/v1/enroll').send({ token: t, publicKey: key.publicKeyPem }).expect(201);
      const once = assertion('replayer', key);
      const results = await Promise.all(Array.from({ length: 20 }, () => request(own.app).post('/v1/auth/robot').send({ assertion: once })));
      for (const r of results) if (r.status === 200) own.secrets.add(r.body.token);
      assert.deepEqual(results.map((r) => r.status).sort(), [200, ...Array(19).fill(401)]);
      const logins = await own.store.read((r) =>
        r.sql.all<{ result: string; details: string }>("SELECT result, details FROM audit_log WHERE action = 'auth.robot' AND actor = 'replayer' ORDER BY id"),
      );
      assert.equal(logins.filter((l) => l.result === 'success').length, 1);
      const refused = logins.filter((l) => l.result === 'failure');
      assert.equal(refused.length, 19);
      assert.ok(refused.every((l) => JSON.parse(l.details).reason === 'replayed jti'));
      assert.equal(await count(own, "SELECT count(*) AS n FROM used_assertions WHERE robot = 'replayer'"), 1);
    }));

  test('robot reports appear in the inventory', async () => {
    const k = deviceKey();
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'reporter', labels: {} }).expect(201);
    await request(ctx.app).post('/v1/enroll').send({ token: (await token('reporter')).token, publicKey: k.publicKeyPem }).expect(201);
    const t = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('reporter', k) })).body.token;
    ctx.secrets.add(t);
    await request(ctx.app)
      .post('/v1/robot/report')
      .set(bearer(t))
      .send({ revision: 'abc', filesystem: 'tmpfs', clockSkewMs: -1200, agentVersion: '0.1.0', enclaves: [{ keystore: 'k', path: '/a', notAfter: '2030-01-01T00:00:00.000Z' }] })
      .expect(204);
    const inv = await request(ctx.app).get('/v1/robots/reporter').set(bearer(admin));
    assert.equal(inv.body.report.filesystem, 'tmpfs');
    assert.equal(inv.body.report.clockSkewMs, -1200);
    assert.deepEqual(inv.body.report.enclaves, [{ keystore: 'k', path: '/a', notAfter: '2030-01-01T00:00:00.000Z' }]);
    // A robot without a real-time clock may be most of a year off: stored as it came (past 32-bit milliseconds).
    const farOff = -300 * 86_400_000;
    await request(ctx.app).post('/v1/robot/report').set(bearer(t)).send({ clockSkewMs: farOff }).expect(204);
    assert.equal((await request(ctx.app).get('/v1/robots/reporter').set(bearer(admin))).body.report.clockSkewMs, farOff);
  });

  test('a report from a robot deleted after its token was checked is refused as a bad token, not a 500', async () => {
    // What a replica does when the deletion happened elsewhere and its change log has not told it yet: the
    // token check passed, then the write finds no robot.
    const report = { revision: 'r', filesystem: 'tmpfs', clockSkewMs: 0, agentVersion: '0.1.0', enclaves: [] };
    await assert.rejects(ctx.services.robots.report({ kind: 'robot', name: 'deleted-meanwhile', keyId: 'k' }, report), (err: unknown) => {
      assert.ok(err instanceof Unauthorized);
      assert.equal(err.code, 'invalid-token');
      return true;
    });
  });
});
