/**
 * With a large fleet waiting, an answer that brings a bundle asks the agent to report on its next contact
 * (`Enclave-Report: next-contact`) instead of at once, so that a rotation's fan-out carries no reports. Here
 * the threshold is 2 waiting robots instead of 1,000.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { REPORT_HEADER, REPORT_ON_NEXT_CONTACT } from '../client/common/robot-wire.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';

describe('reports on the next contact, from a threshold of waiting robots', () => {
  let ctx: TestContext;
  let admin: string;
  const token: Record<string, string> = {};
  const key: Record<string, DeviceKey> = {};

  const revision = async (robot: string) => (await request(ctx.app).get('/v1/robot/bundle').set(bearer(token[robot]!)).expect(200)).body.revision as string;
  /** Parks a long poll of `robot` on its current revision for `seconds`; resolves with its answer. */
  const park = async (robot: string, seconds: number) => {
    const rev = await revision(robot);
    return request(ctx.app).get(`/v1/robot/bundle?wait=${seconds}`).set(bearer(token[robot]!)).set('If-None-Match', `"${rev}"`).then((r) => r);
  };
  /** Until the server counts enough robots waiting (the polls just started are parked). */
  const untilReportsLater = async () => {
    for (let i = 0; i < 500 && !ctx.services.bundles.reportsLater(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(ctx.services.bundles.reportsLater(), 'the polls are parked');
  };
  const login = (robot: string) => request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(robot, key[robot]!), bundle: true }).expect(200);

  before(async () => {
    ctx = await makeTestApp({ reportsLaterFrom: 2 });
    admin = await ctx.adminToken();
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/all', '/solo'] }).expect(201);
    for (const name of ['r1', 'r2', 'r3']) {
      await request(ctx.app).post('/v1/robots').set(a).send({ name, labels: { fleet: 'f' } }).expect(201);
      const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(a).send({});
      ctx.secrets.add(t.body.token);
      key[name] = deviceKey();
      await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key[name]!.publicKeyPem }).expect(201);
      token[name] = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, key[name]!) }).expect(200)).body.token;
      ctx.secrets.add(token[name]!);
    }
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'ks', enclave: '/all', selector: { fleet: 'f' } }).expect(201);
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('below the threshold a bundle asks for nothing: the agent reports at once', async () => {
    const alone = await request(ctx.app).get('/v1/robot/bundle').set(bearer(token.r1!)).expect(200);
    assert.equal(alone.headers[REPORT_HEADER], undefined);
    const one = park('r2', 30);
    await new Promise((r) => setTimeout(r, 200)); // parked
    const boot = await login('r1');
    ctx.secrets.add(boot.body.token);
    assert.ok(boot.body.bundle.revision);
    assert.equal(boot.headers[REPORT_HEADER], undefined, 'one robot waiting');
    await request(ctx.app).post('/v1/keystores/ks/enclaves/all/rotate').set(bearer(admin)).send({}).expect(200);
    assert.equal((await one).status, 200);
  });

  test('from the threshold, a login with its bundle, a bundle and a long poll\'s new bundle ask for the next contact', async () => {
    const polls = [park('r2', 30), park('r3', 30)];
    await untilReportsLater();
    const boot = await login('r1');
    ctx.secrets.add(boot.body.token);
    assert.equal(boot.headers[REPORT_HEADER], REPORT_ON_NEXT_CONTACT, 'login with the bundle');
    const plain = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', key.r1!) }).expect(200);
    ctx.secrets.add(plain.body.token);
    assert.equal(plain.headers[REPORT_HEADER], undefined, 'a login without a bundle');
    const fetched = await request(ctx.app).get('/v1/robot/bundle').set(bearer(token.r1!)).expect(200);
    assert.equal(fetched.headers[REPORT_HEADER], REPORT_ON_NEXT_CONTACT, 'a bundle');
    // A change for r1 alone answers its long poll while r2 and r3 still wait.
    const mine = park('r1', 30);
    await new Promise((r) => setTimeout(r, 200)); // parked
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/solo', robot: 'r1' }).expect(201);
    const answered = await mine;
    assert.equal(answered.status, 200);
    assert.equal(answered.headers[REPORT_HEADER], REPORT_ON_NEXT_CONTACT, 'a long poll\'s new bundle');
    const unchanged = await request(ctx.app).get('/v1/robot/bundle').set(bearer(token.r1!)).set('If-None-Match', answered.headers.etag!).expect(304);
    assert.equal(unchanged.headers[REPORT_HEADER], undefined, 'a 304 brings no bundle');
    // The report itself is answered as ever.
    await request(ctx.app).post('/v1/robot/report').set(bearer(token.r1!)).send({ revision: answered.body.revision, enclaves: [] }).expect(204);
    await request(ctx.app).post('/v1/keystores/ks/enclaves/all/rotate').set(bearer(admin)).send({}).expect(200);
    for (const p of polls) assert.equal((await p).status, 200);
  });
});
