import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

/** A member's robot selector limits removing bindings as much as creating them; robot names don't leak. */
describe('member limits around robots', () => {
  let ctx: TestContext;
  let admin: string;
  let member: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks' }).expect(201);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'secret' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/site_a/x', '/site_b/y'] }).expect(201);
    await request(ctx.app).post('/v1/keystores/secret/enclaves').set(a).send({ path: '/hidden/classified' }).expect(201);
    await request(ctx.app).post('/v1/robots').set(a).send({ name: 'ra', labels: { site: 'a' } }).expect(201);
    await request(ctx.app).post('/v1/robots').set(a).send({ name: 'rb', labels: { site: 'b' } }).expect(201);
    await request(ctx.app).post('/v1/users').set(a).send({ name: 'dev', password: 'dev-password-long' }).expect(201);
    await request(ctx.app).post('/v1/grants').set(a).send({ user: 'dev', keystore: 'ks', pattern: '/**', capabilities: ['read', 'bind'], robotSelector: { site: 'a' } }).expect(201);
    member = await ctx.login('dev', 'dev-password-long');
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('a member cannot remove bindings outside their robot selector, and can remove their own', async () => {
    const toRb = (await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/site_b/y', robot: 'rb' })).body.id;
    const toSiteB = (await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/site_b/y', selector: { site: 'b' } })).body.id;
    assert.equal((await request(ctx.app).delete(`/v1/bindings/${toRb}`).set(bearer(member))).status, 403);
    assert.equal((await request(ctx.app).delete(`/v1/bindings/${toSiteB}`).set(bearer(member))).status, 403);
    const own = (await request(ctx.app).post('/v1/bindings').set(bearer(member)).send({ keystore: 'ks', enclave: '/site_a/x', robot: 'ra' })).body.id;
    assert.equal((await request(ctx.app).delete(`/v1/bindings/${own}`).set(bearer(member))).status, 204);
  });

  test('robots outside the selector do not exist for the member, whether or not they exist', async () => {
    const existing = await request(ctx.app).post('/v1/bindings').set(bearer(member)).send({ keystore: 'ks', enclave: '/site_a/x', robot: 'rb' });
    const missing = await request(ctx.app).post('/v1/bindings').set(bearer(member)).send({ keystore: 'ks', enclave: '/site_a/x', robot: 'nope' });
    assert.equal(existing.status, 404);
    assert.equal(missing.status, 404);
    assert.equal((await request(ctx.app).get('/v1/robots/rb').set(bearer(member))).status, 404);
    const list = (await request(ctx.app).get('/v1/bindings').set(bearer(member))).body.bindings;
    assert.ok(!JSON.stringify(list).includes('"rb"'), 'hidden robot names are not listed');
  });

  test('a robot report shows a member only the enclaves they may read', async () => {
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'secret', enclave: '/hidden/classified', robot: 'ra' }).expect(201);
    const t = await request(ctx.app).post('/v1/robots/ra/enrollment-tokens').set(bearer(admin)).send({});
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const robot = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('ra', key) })).body.token;
    ctx.secrets.add(robot);
    await request(ctx.app)
      .post('/v1/robot/report')
      .set(bearer(robot))
      .send({ revision: 'r', enclaves: [{ keystore: 'secret', path: '/hidden/classified', notAfter: '2030-01-01T00:00:00Z' }, { keystore: 'ks', path: '/site_a/x', notAfter: '2030-01-01T00:00:00Z' }] })
      .expect(204);
    const seen = (await request(ctx.app).get('/v1/robots/ra').set(bearer(member))).body.report.enclaves;
    assert.deepEqual(seen.map((e: { path: string }) => e.path), ['/site_a/x']);
    const all = (await request(ctx.app).get('/v1/robots/ra').set(bearer(admin))).body.report.enclaves;
    assert.equal(all.length, 2);
    // Re-enrolling, even with the same device key, ends the robot tokens issued before.
    await request(ctx.app).post('/v1/robots/ra/revoke-key').set(bearer(admin)).expect(200);
    const t2 = await request(ctx.app).post('/v1/robots/ra/enrollment-tokens').set(bearer(admin)).send({});
    await new Promise((r) => setTimeout(r, 5));
    await request(ctx.app).post('/v1/enroll').send({ token: t2.body.token, publicKey: key.publicKeyPem }).expect(201);
    assert.equal((await request(ctx.app).get('/v1/robot/bundle').set(bearer(robot))).status, 401);
  });
});
