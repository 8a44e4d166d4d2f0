import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';

/**
 * The scenario the product exists for: an admin registers enclaves, a third-party developer sees and
 * binds only theirs, within the robots they are allowed, and robots receive exactly what is bound.
 */
describe('seed scenario: admin, third-party developer, robots', () => {
  let ctx: TestContext;
  let admin: string;
  let acme: string;
  const keys: Record<string, DeviceKey> = {};
  const robotTokens: Record<string, string> = {};
  let bindingId: string;

  const enroll = async (name: string) => {
    const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(bearer(admin)).send({});
    assert.equal(t.status, 201);
    ctx.secrets.add(t.body.token);
    keys[name] = deviceKey();
    const e = await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: keys[name]!.publicKeyPem, agentVersion: 'test' });
    assert.equal(e.status, 201, JSON.stringify(e.body));
    assert.equal(e.body.robot.name, name);
    const a = assertion(name, keys[name]!);
    ctx.secrets.add(a);
    const login = await request(ctx.app).post('/v1/auth/robot').send({ assertion: a });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    ctx.secrets.add(login.body.token);
    robotTokens[name] = login.body.token;
  };

  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'fleet' }).expect(201);
    const batch = await request(ctx.app)
      .post('/v1/keystores/fleet/enclaves:batch')
      .set(bearer(admin))
      .send({ paths: ['/fleet/amr_07/driver', '/fleet/amr_07/planner', '/thirdparty/acme/camera', '/thirdparty/other/lidar'] });
    assert.equal(batch.status, 201, JSON.stringify(batch.body));
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'acme', password: 'acme-developer-pw', role: 'member' }).expect(201);
    const grant = await request(ctx.app)
      .post('/v1/grants')
      .set(bearer(admin))
      .send({ user: 'acme', keystore: 'fleet', pattern: '/thirdparty/acme/**', capabilities: ['read', 'bind'], robotSelector: { tenant: 'acme' } });
    assert.equal(grant.status, 201, JSON.stringify(grant.body));
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'r1', labels: { tenant: 'acme' } }).expect(201);
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'r2', labels: {} }).expect(201);
    acme = await ctx.login('acme', 'acme-developer-pw');
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('acme lists and sees only the camera enclave', async () => {
    const list = await request(ctx.app).get('/v1/keystores/fleet/enclaves').set(bearer(acme));
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.enclaves.map((e: { path: string }) => e.path), ['/thirdparty/acme/camera']);
    assert.equal((await request(ctx.app).get('/v1/keystores/fleet/enclaves/thirdparty/other/lidar').set(bearer(acme))).status, 404);
    const cam = await request(ctx.app).get('/v1/keystores/fleet/enclaves/thirdparty/acme/camera').set(bearer(acme));
    assert.equal(cam.status, 200);
    assert.ok(!JSON.stringify(cam.body).includes('PRIVATE KEY'));
  });

  test('acme binds the camera to r1, is refused for r2 and for the lidar', async () => {
    const ok = await request(ctx.app).post('/v1/bindings').set(bearer(acme)).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', robot: 'r1' });
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    bindingId = ok.body.id;
    const r2 = await request(ctx.app).post('/v1/bindings').set(bearer(acme)).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', robot: 'r2' });
    // r2 is outside acme's robot selector, so for acme it does not exist (names don't leak).
    assert.equal(r2.status, 404);
    const lidar = await request(ctx.app).post('/v1/bindings').set(bearer(acme)).send({ keystore: 'fleet', enclave: '/thirdparty/other/lidar', robot: 'r1' });
    assert.equal(lidar.status, 404);
    const audit = await request(ctx.app).get('/v1/audit?action=binding.create').set(bearer(admin));
    assert.match(audit.body.entries[0].grant, /^grant:g_/);
  });

  test('r1 enrolls, logs in with an assertion and pulls exactly the camera enclave; r2 gets none of it', async () => {
    await enroll('r1');
    await enroll('r2');
    const b1 = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r1!));
    assert.equal(b1.status, 200);
    assert.equal(b1.body.robot, 'r1');
    assert.equal(b1.headers.etag, `"${b1.body.revision}"`);
    assert.deepEqual(b1.body.keystores.map((k: { name: string }) => k.name), ['fleet']);
    const enclaves = b1.body.keystores[0].enclaves;
    assert.deepEqual(enclaves.map((e: { path: string }) => e.path), ['/thirdparty/acme/camera']);
    assert.deepEqual(Object.keys(enclaves[0].files).sort(), ['cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions_ca.cert.pem']);
    const cert = new crypto.X509Certificate(enclaves[0].files['cert.pem']);
    assert.equal(cert.subject, 'CN=/thirdparty/acme/camera');
    assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(enclaves[0].files['key.pem'])));
    const b2 = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r2!));
    assert.deepEqual(b2.body.keystores, []);
    // Same revision → 304.
    const again = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r1!)).set('If-None-Match', b1.headers.etag);
    assert.equal(again.status, 304);
  });

  test('replayed, expired and foreign-key assertions are refused', async () => {
    const a = assertion('r1', keys.r1!);
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: a })).status, 200);
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: a })).status, 401, 'replay');
    const now = Math.floor(Date.now() / 1000);
    const expired = assertion('r1', keys.r1!, { iat: now - 400, exp: now - 200 });
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: expired })).status, 401, 'expired');
    const tooLong = assertion('r1', keys.r1!, { exp: now + 3600 });
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: tooLong })).status, 401, 'lifetime > 5 min');
    const foreign = assertion('r1', deviceKey());
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: foreign })).status, 401, 'other key');
    const wrongAud = assertion('r1', keys.r1!, { aud: 'someone-else' });
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: wrongAud })).status, 401, 'audience');
    const none = assertion('r1', keys.r1!, {}, { alg: 'none' });
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: none })).status, 401, 'alg none');
    const r2AsR1 = assertion('r1', keys.r2!);
    assert.equal((await request(ctx.app).post('/v1/auth/robot').send({ assertion: r2AsR1 })).status, 401, "another robot's key");
  });

  test('after acme deletes the binding, r1\'s long poll returns within a second without the camera', async () => {
    const first = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r1!));
    const started = Date.now();
    const poll = request(ctx.app).get('/v1/robot/bundle?wait=30').set(bearer(robotTokens.r1!)).set('If-None-Match', String(first.headers.etag)).then((r) => r);
    await new Promise((r) => setTimeout(r, 300));
    await request(ctx.app).delete(`/v1/bindings/${bindingId}`).set(bearer(acme)).expect(204);
    const deletedAt = Date.now();
    const res = await poll;
    assert.equal(res.status, 200);
    assert.ok(Date.now() - deletedAt < 1000, `long poll answered ${Date.now() - deletedAt} ms after the change`);
    assert.ok(Date.now() - started >= 300);
    assert.deepEqual(res.body.keystores, []);
    assert.notEqual(res.body.revision, first.body.revision);
  });

  test('a long poll with nothing changing times out with 304', async () => {
    const cur = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r2!));
    const t0 = Date.now();
    const res = await request(ctx.app).get('/v1/robot/bundle?wait=1').set(bearer(robotTokens.r2!)).set('If-None-Match', String(cur.headers.etag));
    assert.equal(res.status, 304);
    assert.ok(Date.now() - t0 >= 900);
  });

  test('deleting the robot ends its access at once', async () => {
    await request(ctx.app).delete('/v1/robots/r2').set(bearer(admin)).expect(204);
    assert.equal((await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotTokens.r2!))).status, 401);
  });

  test('bundle deliveries are audited without file contents', async () => {
    const res = await request(ctx.app).get('/v1/audit?action=bundle.deliver').set(bearer(admin));
    assert.ok(res.body.entries.length >= 2);
    const text = JSON.stringify(res.body);
    assert.doesNotMatch(text, /BEGIN/);
    assert.ok(res.body.entries.some((e: { details: { enclaves: string[] } }) => e.details.enclaves.includes('fleet:/thirdparty/acme/camera')));
    assert.equal((await request(ctx.app).get('/v1/audit/verify').set(bearer(admin))).body.ok, true);
  });
});
