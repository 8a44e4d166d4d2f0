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
  after(() => {
    ctx.services.bundles.close();
    ctx.close();
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
