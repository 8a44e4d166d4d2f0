import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

type Who = 'anonymous' | 'robot' | 'stranger' | 'member' | 'admin';

interface Row {
  route: string;
  call: (ctx: TestContext, token: string | undefined, who: Who) => request.Test;
  /** Expected status per caller; 'ok' = any 2xx. */
  expect: Record<Who, number | 'ok'>;
}

/**
 * Every endpoint × every kind of caller. "member" holds read,manage,bind on /m/** of keystore ks (no robot
 * selector); "stranger" is a member with no grant at all. Each row builds its own target so rows can mutate.
 */
describe('authorization matrix', () => {
  let ctx: TestContext;
  const tokens: Partial<Record<Who, string>> = {};
  let counter = 0;
  const uniq = () => `x${++counter}`;

  before(async () => {
    ctx = await makeTestApp();
    tokens.admin = await ctx.adminToken();
    const a = bearer(tokens.admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks' }).expect(201);
    for (const name of ['member', 'stranger']) {
      await request(ctx.app).post('/v1/users').set(a).send({ name, password: `${name}-password-xyz` }).expect(201);
    }
    await request(ctx.app).post('/v1/grants').set(a).send({ user: 'member', keystore: 'ks', pattern: '/m/**', capabilities: ['read', 'manage', 'bind'] }).expect(201);
    tokens.member = await ctx.login('member', 'member-password-xyz');
    tokens.stranger = await ctx.login('stranger', 'stranger-password-xyz');
    await request(ctx.app).post('/v1/robots').set(a).send({ name: 'bot', labels: {} }).expect(201);
    const t = await request(ctx.app).post('/v1/robots/bot/enrollment-tokens').set(a).send({});
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    tokens.robot = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('bot', key) })).body.token;
    ctx.secrets.add(tokens.robot!);
  });
  after(async () => {
    await ctx.services.bundles.close();
    await ctx.close();
  });

  const admin = () => bearer(tokens.admin!);
  const enclave = async (path: string) => {
    await request(ctx.app).post('/v1/keystores/ks/enclaves').set(admin()).send({ path }).expect(201);
    return path;
  };
  const withAuth = (t: request.Test, token?: string) => (token ? t.set(bearer(token)) : t);
  const human = { anonymous: 401, robot: 403 } as const;

  const rows: Row[] = [
    { route: 'GET /v1/users', call: (c, t) => withAuth(request(c.app).get('/v1/users'), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    { route: 'POST /v1/users', call: (c, t) => withAuth(request(c.app).post('/v1/users').send({ name: uniq(), password: 'some-password-123' }), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    { route: 'GET /v1/grants', call: (c, t) => withAuth(request(c.app).get('/v1/grants'), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    // The console's views: any signed-in person, each seeing only what their grants reach (test/console.test.ts).
    { route: 'GET /v1/session', call: (c, t) => withAuth(request(c.app).get('/v1/session'), t), expect: { ...human, stranger: 'ok', member: 'ok', admin: 'ok' } },
    { route: 'GET /v1/fleet', call: (c, t) => withAuth(request(c.app).get('/v1/fleet'), t), expect: { ...human, stranger: 'ok', member: 'ok', admin: 'ok' } },
    { route: 'POST /v1/grants', call: (c, t) => withAuth(request(c.app).post('/v1/grants').send({ user: 'member', keystore: 'ks', pattern: '/z', capabilities: ['read'] }), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    { route: 'GET /v1/keystores', call: (c, t) => withAuth(request(c.app).get('/v1/keystores'), t), expect: { ...human, stranger: 'ok', member: 'ok', admin: 'ok' } },
    { route: 'POST /v1/keystores', call: (c, t) => withAuth(request(c.app).post('/v1/keystores').send({ name: uniq() }), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    { route: 'GET /v1/keystores/{ks}', call: (c, t) => withAuth(request(c.app).get('/v1/keystores/ks'), t), expect: { ...human, stranger: 404, member: 'ok', admin: 'ok' } },
    { route: 'GET /v1/keystores/{ks}/export', call: (c, t) => withAuth(request(c.app).get('/v1/keystores/ks/export'), t), expect: { ...human, stranger: 403, member: 403, admin: 'ok' } },
    { route: 'PUT /v1/keystores/{ks}/governance', call: (c, t) => withAuth(request(c.app).put('/v1/keystores/ks/governance').type('application/xml').send('<x/>'), t), expect: { ...human, stranger: 403, member: 403, admin: 422 } },
    { route: 'GET /v1/keystores/{ks}/enclaves', call: (c, t) => withAuth(request(c.app).get('/v1/keystores/ks/enclaves'), t), expect: { ...human, stranger: 404, member: 'ok', admin: 'ok' } },
    { route: 'POST /v1/keystores/{ks}/enclaves (inside pattern)', call: (c, t) => withAuth(request(c.app).post('/v1/keystores/ks/enclaves').send({ path: `/m/${uniq()}` }), t), expect: { ...human, stranger: 404, member: 'ok', admin: 'ok' } },
    { route: 'POST /v1/keystores/{ks}/enclaves (outside pattern)', call: (c, t) => withAuth(request(c.app).post('/v1/keystores/ks/enclaves').send({ path: `/o/${uniq()}` }), t), expect: { ...human, stranger: 404, member: 404, admin: 'ok' } },
    { route: 'POST /v1/keystores/{ks}/enclaves:batch', call: (c, t) => withAuth(request(c.app).post('/v1/keystores/ks/enclaves:batch').send({ paths: [`/m/${uniq()}`, `/m/${uniq()}`] }), t), expect: { ...human, stranger: 404, member: 'ok', admin: 'ok' } },
  ];

  // Rows whose target enclave must exist first (made by the admin).
  const enclaveRows: { route: string; inside: boolean; call: (c: TestContext, t: string | undefined, path: string) => request.Test; memberInside: number | 'ok'; memberOutside: number }[] = [
    { route: 'GET .../enclaves/{path}', inside: true, call: (c, t, p) => withAuth(request(c.app).get(`/v1/keystores/ks/enclaves${p}`), t), memberInside: 'ok', memberOutside: 404 },
    { route: 'PUT .../enclaves/{path}/policy', inside: true, call: (c, t, p) => withAuth(request(c.app).put(`/v1/keystores/ks/enclaves${p}/policy`).type('application/xml').send(`<policy version="0.2.0"><enclaves><enclave path="${p}"><profiles><profile ns="/" node="n"><topics publish="ALLOW"><topic>chatter</topic></topics></profile></profiles></enclave></enclaves></policy>`), t), memberInside: 'ok', memberOutside: 404 },
    { route: 'POST .../enclaves/{path}/rotate', inside: true, call: (c, t, p) => withAuth(request(c.app).post(`/v1/keystores/ks/enclaves${p}/rotate`), t), memberInside: 'ok', memberOutside: 404 },
    { route: 'POST .../enclaves/{path}/revoke', inside: true, call: (c, t, p) => withAuth(request(c.app).post(`/v1/keystores/ks/enclaves${p}/revoke`), t), memberInside: 'ok', memberOutside: 404 },
    { route: 'DELETE .../enclaves/{path}', inside: true, call: (c, t, p) => withAuth(request(c.app).delete(`/v1/keystores/ks/enclaves${p}`), t), memberInside: 'ok', memberOutside: 404 },
    { route: 'POST /v1/bindings', inside: true, call: (c, t, p) => withAuth(request(c.app).post('/v1/bindings').send({ keystore: 'ks', enclave: p, robot: 'bot' }), t), memberInside: 'ok', memberOutside: 404 },
  ];

  const who: Who[] = ['anonymous', 'robot', 'stranger', 'member', 'admin'];
  const check = (res: request.Response, expected: number | 'ok', label: string) => {
    if (expected === 'ok') assert.ok(res.status >= 200 && res.status < 300, `${label}: expected 2xx, got ${res.status} ${JSON.stringify(res.body)}`);
    else assert.equal(res.status, expected, `${label}: ${JSON.stringify(res.body)}`);
    if (res.status >= 400) assert.equal(typeof res.body.error?.code, 'string', `${label}: error body`);
  };

  for (const row of rows) {
    for (const w of who) {
      test(`${row.route} as ${w} → ${row.expect[w]}`, async () => {
        check(await row.call(ctx, tokens[w], w), row.expect[w], `${row.route} as ${w}`);
      });
    }
  }

  for (const row of enclaveRows) {
    for (const w of who) {
      for (const inside of [true, false]) {
        if (!inside && (w === 'anonymous' || w === 'robot' || w === 'admin')) continue;
        const expected: number | 'ok' =
          w === 'anonymous' ? 401 : w === 'robot' ? 403 : w === 'admin' ? 'ok' : w === 'stranger' ? 404 : inside ? row.memberInside : row.memberOutside;
        test(`${row.route} (${inside ? 'inside' : 'outside'} the grant) as ${w} → ${expected}`, async () => {
          const path = await enclave(`/${inside ? 'm' : 'o'}/${uniq()}`);
          check(await row.call(ctx, tokens[w], path), expected, `${row.route} as ${w}`);
        });
      }
    }
  }

  const robotRows: [string, (t?: string) => request.Test][] = [
    ['GET /v1/robot/bundle', (t) => withAuth(request(ctx.app).get('/v1/robot/bundle'), t)],
    ['POST /v1/robot/report', (t) => withAuth(request(ctx.app).post('/v1/robot/report').send({ revision: 'r' }), t)],
  ];
  for (const [route, call] of robotRows) {
    test(`${route}: anonymous 401, users 403, robot ok`, async () => {
      check(await call(), 401, 'anonymous');
      check(await call(tokens.admin), 403, 'admin');
      check(await call(tokens.member), 403, 'member');
      check(await call(tokens.robot), 'ok', 'robot');
    });
  }

  test('admin-only robot routes', async () => {
    for (const w of who) {
      const expected = w === 'anonymous' ? 401 : w === 'admin' ? 'ok' : 403;
      check(await withAuth(request(ctx.app).post('/v1/robots').send({ name: uniq(), labels: {} }), tokens[w]), expected, `POST /v1/robots as ${w}`);
      check(await withAuth(request(ctx.app).post('/v1/robots/bot/enrollment-tokens').send({ reenroll: true }), tokens[w]), expected, `enrollment token as ${w}`);
    }
  });

  test('a member never receives a private key from any endpoint', async () => {
    const path = await enclave(`/m/${uniq()}`);
    const responses = await Promise.all([
      request(ctx.app).get(`/v1/keystores/ks/enclaves${path}`).set(bearer(tokens.member!)),
      request(ctx.app).get('/v1/keystores/ks/enclaves').set(bearer(tokens.member!)),
      request(ctx.app).get('/v1/keystores/ks').set(bearer(tokens.member!)),
      request(ctx.app).get('/v1/keystores/ks/export').set(bearer(tokens.member!)),
      request(ctx.app).get('/v1/keystores/ks/export?private=true').set(bearer(tokens.member!)),
      request(ctx.app).post(`/v1/keystores/ks/enclaves${path}/rotate`).set(bearer(tokens.member!)),
    ]);
    for (const r of responses) assert.doesNotMatch(r.text ?? '', /PRIVATE KEY/);
  });
});
