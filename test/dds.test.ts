import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';
import { ddsPairCheck, ddsUnavailable, EXAMPLE_POLICIES, writeEnclave } from './helpers/tools.js';

/**
 * A real DDS-Security peer (Cyclone DDS) accepts what the server hands out. Enclaves are taken from a
 * robot's bundle JSON and written to folders, so the check also proves the delivered bytes are intact.
 */
describe('enclaves work with a real DDS-Security peer', { skip: ddsUnavailable() ?? false }, () => {
  let ctx: TestContext;
  let admin: string;
  let robotToken: string;
  const dirs = new Map<string, string>();

  before(async () => {
    ctx = await makeTestApp();
    // As the server does at start: the policy's time limit must not be spent loading the sandbox's workers.
    await ctx.services.sandbox.warm();
    admin = await ctx.adminToken();
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'alpha' }).expect(201);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'beta', splitCa: true }).expect(201);
    await request(ctx.app).post('/v1/keystores/alpha/enclaves:batch').set(a).send({ paths: ['/robot_a', '/robot_b'] }).expect(201);
    await request(ctx.app).post('/v1/keystores/beta/enclaves').set(a).send({ path: '/robot_c' }).expect(201);
    // The README walkthrough's own policy (sros2's fixture policy gets its DDS check in agent-e2e.test.ts).
    const policy = execFileSync('tar', ['-czf', '-', '-C', EXAMPLE_POLICIES, 'talker_listener.policy.xml', 'common']).toString('base64');
    await request(ctx.app)
      .post('/v1/keystores/alpha/enclaves:batch')
      .set(a)
      .send({ paths: ['/talker_listener/talker', '/talker_listener/listener'], policyArchive: policy })
      .expect(201);
    await request(ctx.app).post('/v1/robots').set(a).send({ name: 'tester', labels: { role: 'dds' } }).expect(201);
    for (const [ks, enclave] of [['alpha', '/robot_a'], ['alpha', '/robot_b'], ['beta', '/robot_c'], ['alpha', '/talker_listener/talker']] as const) {
      await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: ks, enclave, robot: 'tester' }).expect(201);
    }
    // The listener reaches the robot through a label selector.
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'alpha', enclave: '/talker_listener/listener', selector: { role: 'dds' } }).expect(201);
    const t = await request(ctx.app).post('/v1/robots/tester/enrollment-tokens').set(a).send({});
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    robotToken = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('tester', key) })).body.token;
    ctx.secrets.add(robotToken);
    const bundle = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotToken));
    assert.equal(bundle.status, 200);
    for (const ks of bundle.body.keystores) {
      for (const e of ks.enclaves) dirs.set(`${ks.name}:${e.path}`, writeEnclave(path.join(ctx.dir, 'robot', ks.name, e.path), e.files));
    }
    assert.equal(dirs.size, 5);
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.services.sandbox.close();
    await ctx.close();
  });

  test('two enclaves with the default policy authenticate and exchange encrypted data', () => {
    const r = ddsPairCheck(dirs.get('alpha:/robot_a')!, dirs.get('alpha:/robot_b')!);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /^OK: /m);
  });

  test('talker/listener from examples/policies pass on rt/chatter with roles pub,sub', () => {
    const r = ddsPairCheck(dirs.get('alpha:/talker_listener/talker')!, dirs.get('alpha:/talker_listener/listener')!, ['-T', 'rt/chatter', '--roles', 'pub,sub']);
    assert.equal(r.status, 0, r.out);
  });

  test('the listener may not publish chatter: the reverse roles fail', () => {
    const r = ddsPairCheck(dirs.get('alpha:/talker_listener/talker')!, dirs.get('alpha:/talker_listener/listener')!, ['-T', 'rt/chatter', '--roles', 'sub,pub']);
    assert.equal(r.status, 1, r.out);
  });

  test('a pair from two different keystores fails', () => {
    const r = ddsPairCheck(dirs.get('alpha:/robot_a')!, dirs.get('beta:/robot_c')!);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /^FAIL: /m);
  });
});

/**
 * A member's enclaves made without a policy carry their grant's envelope as permissions, as DDS globs
 * (`rt/thirdparty/acme/**` becomes `rt/thirdparty/acme/*`): Cyclone DDS must honour them as meant.
 */
describe("a member's envelope permissions in a real DDS-Security peer", { skip: ddsUnavailable() ?? false }, () => {
  let ctx: TestContext;
  const dirs = new Map<string, string>();

  before(async () => {
    ctx = await makeTestApp();
    const a = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'fleet' }).expect(201);
    await request(ctx.app).post('/v1/users').set(a).send({ name: 'acme', password: 'acme-password-123' }).expect(201);
    await request(ctx.app)
      .post('/v1/grants')
      .set(a)
      .send({
        user: 'acme',
        keystore: 'fleet',
        pattern: '/thirdparty/acme/**',
        capabilities: ['read', 'manage'],
        permissionsEnvelope: { publish: ['rt/thirdparty/acme/**'], subscribe: ['rt/thirdparty/acme/**'] },
      })
      .expect(201);
    await request(ctx.app).post('/v1/users').set(a).send({ name: 'bare', password: 'bare-password-123' }).expect(201);
    await request(ctx.app).post('/v1/grants').set(a).send({ user: 'bare', keystore: 'fleet', pattern: '/bare/**', capabilities: ['read', 'manage'] }).expect(201);
    const acme = bearer(await ctx.login('acme', 'acme-password-123'));
    const bare = bearer(await ctx.login('bare', 'bare-password-123'));
    await request(ctx.app).post('/v1/keystores/fleet/enclaves:batch').set(acme).send({ paths: ['/thirdparty/acme/cam', '/thirdparty/acme/viewer'] }).expect(201);
    await request(ctx.app).post('/v1/keystores/fleet/enclaves:batch').set(bare).send({ paths: ['/bare/a', '/bare/b'] }).expect(201);
    await request(ctx.app).post('/v1/robots').set(a).send({ name: 'tester', labels: {} }).expect(201);
    for (const enclave of ['/thirdparty/acme/cam', '/thirdparty/acme/viewer', '/bare/a', '/bare/b']) {
      await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'fleet', enclave, robot: 'tester' }).expect(201);
    }
    const t = await request(ctx.app).post('/v1/robots/tester/enrollment-tokens').set(a).send({});
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const robotToken = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('tester', key) })).body.token as string;
    ctx.secrets.add(robotToken);
    const bundle = await request(ctx.app).get('/v1/robot/bundle').set(bearer(robotToken)).expect(200);
    for (const e of bundle.body.keystores[0].enclaves) dirs.set(e.path, writeEnclave(path.join(ctx.dir, 'robot', e.path), e.files));
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('inside the envelope: the pair exchanges data on rt/thirdparty/acme/chatter', () => {
    const r = ddsPairCheck(dirs.get('/thirdparty/acme/cam')!, dirs.get('/thirdparty/acme/viewer')!, ['-T', 'rt/thirdparty/acme/chatter']);
    assert.equal(r.status, 0, r.out);
  });

  test('outside the envelope: refused on rt/chatter', () => {
    const r = ddsPairCheck(dirs.get('/thirdparty/acme/cam')!, dirs.get('/thirdparty/acme/viewer')!, ['-T', 'rt/chatter']);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /permissions do not allow topic rt\/chatter/);
  });

  test('no envelope: deny all, even on the check topic', () => {
    const r = ddsPairCheck(dirs.get('/bare/a')!, dirs.get('/bare/b')!);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /permissions do not allow topic/);
  });
});
