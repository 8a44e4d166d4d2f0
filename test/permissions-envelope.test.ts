import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { outsideEnvelope, topicWithin } from '../server/acl/envelope.js';
import { allowedTopics } from '../server/policy/allowed-topics.js';
import { validateXml } from '../server/policy/xsd.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { openssl } from './helpers/tools.js';

const policy = (path: string, topics: { publish?: string[]; subscribe?: string[] }) => `<policy version="0.2.0"><enclaves><enclave path="${path}"><profiles>
  <profile ns="/" node="cam">
    ${topics.publish?.length ? `<topics publish="ALLOW">${topics.publish.map((t) => `<topic>${t}</topic>`).join('')}</topics>` : ''}
    ${topics.subscribe?.length ? `<topics subscribe="ALLOW">${topics.subscribe.map((t) => `<topic>${t}</topic>`).join('')}</topics>` : ''}
  </profile></profiles></enclave></enclaves></policy>`;

describe('permissions envelopes (pure)', () => {
  const rows: [topic: string, pattern: string, within: boolean][] = [
    ['rt/acme/camera', 'rt/acme/**', true],
    ['rt/acme/a/b/c', 'rt/acme/**', true],
    ['rt/acme', 'rt/acme/**', false],
    ['rt/acmeevil/x', 'rt/acme/**', false],
    ['rt/acme/*', 'rt/acme/**', true],
    ['rt/acme*', 'rt/acme/**', false],
    ['rt/*', 'rt/acme/**', false],
    ['*', 'rt/acme/**', false],
    ['rt/ac?e/x', 'rt/acme/**', false],
    ['rt/rosout', 'rt/rosout', true],
    ['rt/rosout2', 'rt/rosout', false],
    ['rt/rosout*', 'rt/rosout', false],
  ];
  for (const [topic, pattern, within] of rows) {
    test(`${topic} ${within ? 'inside' : 'outside'} ${pattern}`, () => assert.equal(topicWithin(topic, pattern), within));
  }
  test('discovery is always allowed; deny-only lists need nothing', () => {
    assert.deepEqual(outsideEnvelope({ publish: ['ros_discovery_info', 'rt/x'], subscribe: ['ros_discovery_info'] }, { publish: [], subscribe: [] }), {
      publish: ['rt/x'],
      subscribe: [],
    });
  });
});

/**
 * A security review: `manage` on /thirdparty/acme/** let a member create an enclave with no policy (sros2's
 * allow-all: every topic of the domain) or a policy granting any topic. Grants now bound what their holder signs.
 */
describe('a member signs only inside their grant', () => {
  let ctx: TestContext;
  let admin: Record<string, string>;
  let bounded: Record<string, string>;
  let unbounded: Record<string, string>;
  let boundedGrant: string;

  before(async () => {
    ctx = await makeTestApp();
    // As the server does at start (main.ts): the policy time limit is for reading policies, not for loading
    // the sandbox's workers, which on a loaded machine alone can take longer than the limit.
    await ctx.services.sandbox.warm();
    admin = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(admin).send({ name: 'fleet' }).expect(201);
    for (const name of ['acme', 'loose']) {
      await request(ctx.app).post('/v1/users').set(admin).send({ name, password: `${name}-password-123` }).expect(201);
    }
    const g = await request(ctx.app)
      .post('/v1/grants')
      .set(admin)
      .send({
        user: 'acme',
        keystore: 'fleet',
        pattern: '/thirdparty/acme/**',
        capabilities: ['read', 'manage'],
        permissionsEnvelope: { publish: ['rt/thirdparty/acme/**', 'rt/rosout'], subscribe: ['rt/thirdparty/acme/**', 'rt/clock'] },
      })
      .expect(201);
    boundedGrant = g.body.id;
    assert.deepEqual(g.body.permissionsEnvelope.subscribe, ['rt/thirdparty/acme/**', 'rt/clock']);
    await request(ctx.app).post('/v1/grants').set(admin).send({ user: 'loose', keystore: 'fleet', pattern: '/loose/**', capabilities: ['read', 'manage'] }).expect(201);
    bounded = bearer(await ctx.login('acme', 'acme-password-123'));
    unbounded = bearer(await ctx.login('loose', 'loose-password-123'));
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.services.sandbox.close();
    await ctx.close();
  });

  const topicsOf = async (path: string) => {
    const e = await request(ctx.app).get(`/v1/keystores/fleet/enclaves${path}`).set(admin).expect(200);
    return { view: e.body, topics: allowedTopics(e.body.permissionsXml) };
  };

  test('a malformed envelope is refused when the grant is written', async () => {
    for (const bad of [['rt/a/*'], ['rt/**/x'], ['rt a'], ['']]) {
      const res = await request(ctx.app)
        .post('/v1/grants')
        .set(admin)
        .send({ user: 'acme', keystore: 'fleet', pattern: '/x', capabilities: ['manage'], permissionsEnvelope: { publish: bad } });
      assert.equal(res.status, 422, `${JSON.stringify(bad)}: ${res.status}`);
    }
  });

  test('no policy, envelope: the enclave gets exactly the envelope, signed and verifiable', async () => {
    const res = await request(ctx.app).post('/v1/keystores/fleet/enclaves').set(bounded).send({ path: '/thirdparty/acme/cam' }).expect(201);
    assert.equal(res.body.permissionsSource, 'envelope');
    const { topics, view } = await topicsOf('/thirdparty/acme/cam');
    assert.deepEqual(topics, { publish: ['rt/thirdparty/acme/*', 'rt/rosout', 'ros_discovery_info'], subscribe: ['rt/thirdparty/acme/*', 'rt/clock', 'ros_discovery_info'] });
    assert.deepEqual(await validateXml(view.permissionsXml, 'permissions'), []);
  });

  test('no policy, no envelope: deny by default, never allow-all', async () => {
    const res = await request(ctx.app).post('/v1/keystores/fleet/enclaves').set(unbounded).send({ path: '/loose/cam' }).expect(201);
    assert.equal(res.body.permissionsSource, 'envelope');
    const { topics } = await topicsOf('/loose/cam');
    assert.deepEqual(topics, { publish: ['ros_discovery_info'], subscribe: ['ros_discovery_info'] });
    assert.deepEqual(await validateXml((await topicsOf('/loose/cam')).view.permissionsXml, 'permissions'), []);
    const adminMade = await request(ctx.app).post('/v1/keystores/fleet/enclaves').set(admin).send({ path: '/loose/by_admin' }).expect(201);
    assert.equal(adminMade.body.permissionsSource, 'default', 'admins keep sros2 allow-all default');
    assert.ok((await topicsOf('/loose/by_admin')).topics.publish.includes('rt/*'));
  });

  test('a policy inside the envelope is signed; one outside is refused with nothing created', async () => {
    await request(ctx.app)
      .post('/v1/keystores/fleet/enclaves')
      .set(bounded)
      .send({ path: '/thirdparty/acme/ok', policy: policy('/thirdparty/acme/ok', { publish: ['/thirdparty/acme/image', 'rosout'], subscribe: ['/thirdparty/acme/cmd'] }) })
      .expect(201);
    const wide = await request(ctx.app)
      .post('/v1/keystores/fleet/enclaves')
      .set(bounded)
      .send({ path: '/thirdparty/acme/wide', policy: policy('/thirdparty/acme/wide', { publish: ['/cmd_vel'] }) });
    assert.equal(wide.status, 403);
    assert.equal(wide.body.error.code, 'outside-permissions-envelope');
    assert.equal((await request(ctx.app).get('/v1/keystores/fleet/enclaves/thirdparty/acme/wide').set(admin)).status, 404);
    const batch = await request(ctx.app)
      .post('/v1/keystores/fleet/enclaves:batch')
      .set(bounded)
      .send({ paths: ['/thirdparty/acme/b1'], policy: policy('/thirdparty/acme/b1', { subscribe: ['/tf'] }) });
    assert.equal(batch.status, 403);
  });

  test('a policy change outside the envelope is refused; the enclave keeps what it had', async () => {
    const before = await topicsOf('/thirdparty/acme/ok');
    const res = await request(ctx.app)
      .put('/v1/keystores/fleet/enclaves/thirdparty/acme/ok/policy')
      .set(bounded)
      .type('application/xml')
      .send(policy('/thirdparty/acme/ok', { publish: ['/thirdparty/acme/image', '/cmd_vel'] }));
    assert.equal(res.status, 403);
    assert.deepEqual((await topicsOf('/thirdparty/acme/ok')).view.permissionsXml, before.view.permissionsXml);
  });

  test('rotation keeps the permissions and is refused once the envelope no longer covers them', async () => {
    const before = await topicsOf('/thirdparty/acme/cam');
    const rotated = await request(ctx.app).post('/v1/keystores/fleet/enclaves/thirdparty/acme/cam/rotate').set(bounded).send({}).expect(200);
    assert.notEqual(rotated.body.serial, before.view.serial);
    assert.deepEqual((await topicsOf('/thirdparty/acme/cam')).topics, before.topics, 'rotation never widens an enclave');

    await request(ctx.app).patch(`/v1/grants/${boundedGrant}`).set(admin).send({ permissionsEnvelope: { publish: ['rt/thirdparty/acme/**'], subscribe: [] } }).expect(200);
    const narrowed = await request(ctx.app).post('/v1/keystores/fleet/enclaves/thirdparty/acme/cam/rotate').set(bearer(await ctx.login('acme', 'acme-password-123'))).send({});
    assert.equal(narrowed.status, 403);
    assert.equal(narrowed.body.error.code, 'outside-permissions-envelope');
    await request(ctx.app).post('/v1/keystores/fleet/enclaves/thirdparty/acme/cam/rotate').set(admin).send({}).expect(200);
  });

  test('what is signed verifies with openssl under the permissions CA', async () => {
    const ks = await request(ctx.app).get('/v1/keystores/fleet').set(admin).expect(200);
    const dir = `${ctx.dir}/envelope`;
    const { mkdirSync, writeFileSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/ca.pem`, ks.body.permissionsCa.certificate);
    const exported = await request(ctx.app).get('/v1/keystores/fleet/export').set(admin).buffer(true).parse((res, cb) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => cb(null, Buffer.concat(chunks)));
    });
    const { untar } = await import('./helpers/tools.js');
    untar(exported.body as Buffer, dir);
    const p7s = `${dir}/keystore/enclaves/loose/cam/permissions.p7s`;
    const v = openssl(['smime', '-verify', '-text', '-in', p7s, '-CAfile', `${dir}/ca.pem`]);
    assert.equal(v.status, 0, v.out);
    assert.match(v.stdout, /<default>DENY<\/default>/);
  });
});
