import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

/**
 * A security review: a member bound their enclave to a robot labelled tenant=acme; an admin relabelled the
 * robot tenant=other; the robot still received the member's enclave (with its key), and the member could no
 * longer see or delete the binding. A binding made through a grant now holds only while the grant covers it.
 */
describe('a binding made through a grant lasts only while the grant covers it', () => {
  let ctx: TestContext;
  let admin: Record<string, string>;
  let acme: Record<string, string>;
  let grantId: string;

  const robotToken = async (name: string, labels: Record<string, string>) => {
    await request(ctx.app).post('/v1/robots').set(admin).send({ name, labels }).expect(201);
    const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(admin).send({}).expect(201);
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const token = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, key) }).expect(200)).body.token as string;
    ctx.secrets.add(token);
    return bearer(token);
  };
  const held = async (robot: Record<string, string>) => {
    const b = await request(ctx.app).get('/v1/robot/bundle').set(robot).expect(200);
    return (b.body.keystores as { name: string; enclaves: { path: string }[] }[]).flatMap((k) => k.enclaves.map((e) => `${k.name}:${e.path}`));
  };

  before(async () => {
    ctx = await makeTestApp();
    admin = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(admin).send({ name: 'fleet' }).expect(201);
    await request(ctx.app).post('/v1/keystores/fleet/enclaves:batch').set(admin).send({ paths: ['/thirdparty/acme/camera', '/fleet/driver'] }).expect(201);
    await request(ctx.app).post('/v1/users').set(admin).send({ name: 'acme', password: 'acme-password-123' }).expect(201);
    const g = await request(ctx.app)
      .post('/v1/grants')
      .set(admin)
      .send({ user: 'acme', keystore: 'fleet', pattern: '/thirdparty/acme/**', capabilities: ['read', 'bind'], robotSelector: { tenant: 'acme' } })
      .expect(201);
    grantId = g.body.id;
    acme = bearer(await ctx.login('acme', 'acme-password-123'));
  });
  after(async () => {
    await ctx.services.bundles.close();
    await ctx.close();
  });

  test('relabelling the robot out of the grant stops delivery at once, reaches a waiting robot, and the member can still remove it', async () => {
    const bot = await robotToken('cam-bot', { tenant: 'acme' });
    const binding = await request(ctx.app).post('/v1/bindings').set(acme).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', robot: 'cam-bot' }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(admin).send({ keystore: 'fleet', enclave: '/fleet/driver', robot: 'cam-bot' }).expect(201);
    const before = await request(ctx.app).get('/v1/robot/bundle').set(bot).expect(200);
    assert.deepEqual((await held(bot)).sort(), ['fleet:/fleet/driver', 'fleet:/thirdparty/acme/camera']);

    const waiting = request(ctx.app).get('/v1/robot/bundle?wait=30').set(bot).set('If-None-Match', `"${before.body.revision}"`);
    const answered = new Promise<request.Response>((resolve, reject) => waiting.then(resolve, reject));
    await new Promise((r) => setTimeout(r, 100));
    await request(ctx.app).patch('/v1/robots/cam-bot').set(admin).send({ labels: { tenant: 'other' } }).expect(200);
    const changed = await answered;
    assert.equal(changed.status, 200, 'the waiting robot is answered with the change');
    assert.deepEqual(changed.body.keystores[0].enclaves.map((e: { path: string }) => e.path), ['/fleet/driver'], "the admin's binding stays");
    assert.doesNotMatch(JSON.stringify(changed.body), /thirdparty\/acme/);

    const listed = await request(ctx.app).get('/v1/bindings').set(acme).expect(200);
    const mine = listed.body.bindings.find((b: { id: string }) => b.id === binding.body.id);
    assert.equal(mine.status, 'suspended');
    assert.equal(mine.robot, 'cam-bot', 'the member still sees the robot they bound');
    assert.match(mine.statusReason, /robot selector/);

    await request(ctx.app).patch('/v1/robots/cam-bot').set(admin).send({ labels: { tenant: 'acme' } }).expect(200);
    assert.ok((await held(bot)).includes('fleet:/thirdparty/acme/camera'), 'back inside the selector: delivered again');
    await request(ctx.app).patch('/v1/robots/cam-bot').set(admin).send({ labels: { tenant: 'other' } }).expect(200);
    await request(ctx.app).delete(`/v1/bindings/${binding.body.id}`).set(acme).expect(204);
  });

  test('editing the grant (selector or capabilities) takes effect on existing bindings', async () => {
    const bot = await robotToken('cam-bot-2', { tenant: 'acme', site: 'tokyo' });
    await request(ctx.app).post('/v1/bindings').set(acme).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', robot: 'cam-bot-2' }).expect(201);
    const sel = await request(ctx.app).post('/v1/bindings').set(acme).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', selector: { tenant: 'acme' } }).expect(201);
    assert.deepEqual(await held(bot), ['fleet:/thirdparty/acme/camera']);

    await request(ctx.app).patch(`/v1/grants/${grantId}`).set(admin).send({ robotSelector: { tenant: 'acme', site: 'osaka' } }).expect(200);
    assert.deepEqual(await held(bot), [], 'the robot is outside the narrowed selector');
    const listed = (await request(ctx.app).get('/v1/bindings').set(admin).expect(200)).body.bindings as { id: string; status: string }[];
    assert.equal(listed.find((b) => b.id === sel.body.id)!.status, 'limited');

    await request(ctx.app).patch(`/v1/grants/${grantId}`).set(admin).send({ robotSelector: { tenant: 'acme' } }).expect(200);
    assert.deepEqual(await held(bot), ['fleet:/thirdparty/acme/camera']);
    await request(ctx.app).patch(`/v1/grants/${grantId}`).set(admin).send({ capabilities: ['read'] }).expect(200);
    assert.deepEqual(await held(bot), [], 'without bind, the grant no longer carries its bindings');
    await request(ctx.app).patch(`/v1/grants/${grantId}`).set(admin).send({ capabilities: ['read', 'bind'] }).expect(200);
    assert.deepEqual(await held(bot), ['fleet:/thirdparty/acme/camera']);
  });

  test('deleting the grant removes its bindings', async () => {
    const bot = await robotToken('cam-bot-3', { tenant: 'acme' });
    await request(ctx.app).post('/v1/users').set(admin).send({ name: 'acme2', password: 'acme2-password-123' }).expect(201);
    const g = await request(ctx.app)
      .post('/v1/grants')
      .set(admin)
      .send({ user: 'acme2', keystore: 'fleet', pattern: '/thirdparty/acme/camera', capabilities: ['read', 'bind'] })
      .expect(201);
    const acme2 = bearer(await ctx.login('acme2', 'acme2-password-123'));
    await request(ctx.app).post('/v1/bindings').set(acme2).send({ keystore: 'fleet', enclave: '/thirdparty/acme/camera', robot: 'cam-bot-3' }).expect(201);
    assert.ok((await held(bot)).includes('fleet:/thirdparty/acme/camera'));
    await request(ctx.app).delete(`/v1/grants/${g.body.id}`).set(admin).expect(204);
    assert.equal(
      (await request(ctx.app).get('/v1/bindings').set(admin)).body.bindings.filter((b: { robot?: string }) => b.robot === 'cam-bot-3').length,
      0,
    );
  });
});
