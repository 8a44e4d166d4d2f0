import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

/**
 * Every route, fed junk as an admin (who passes every authorization check and so reaches the deepest
 * code): the answer is always a 4xx with an error body, never a 500.
 */
describe('bad input never causes a 500', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'ks' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks/enclaves').set(bearer(admin)).send({ path: '/e' }).expect(201);
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'bot', labels: {} }).expect(201);
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  const routes: [string, string][] = [
    ['post', '/v1/auth/login'],
    ['post', '/v1/enroll'],
    ['post', '/v1/auth/robot'],
    ['post', '/v1/users'],
    ['patch', '/v1/users/admin'],
    ['post', '/v1/grants'],
    ['post', '/v1/keystores'],
    ['post', '/v1/keystores/ks/import'],
    ['put', '/v1/keystores/ks/governance'],
    ['post', '/v1/keystores/ks/enclaves'],
    ['post', '/v1/keystores/ks/enclaves:batch'],
    ['put', '/v1/keystores/ks/enclaves/e/policy'],
    ['post', '/v1/keystores/ks/enclaves/e/rotate'],
    ['post', '/v1/robots'],
    ['patch', '/v1/robots/bot'],
    ['post', '/v1/robots/bot/enrollment-tokens'],
    ['post', '/v1/bindings'],
  ];
  const junk: [string, string, string][] = [
    ['null', 'application/json', 'null'],
    ['array', 'application/json', '[1,2,3]'],
    ['string', 'application/json', '"x"'],
    ['number', 'application/json', '42'],
    ['nested garbage', 'application/json', JSON.stringify({ name: { a: 1 }, path: ['x'], paths: 'x', policy: 12, policyArchive: '!!!', labels: [1], selector: 'a', capabilities: 'read', keystore: {}, enclave: null, token: 1, publicKey: [], assertion: {}, username: [], password: {} })],
    ['deep nesting', 'application/json', '{"a":'.repeat(2000) + '1' + '}'.repeat(2000)],
    ['prototype pollution', 'application/json', '{"__proto__":{"role":"admin"},"constructor":{"prototype":{"x":1}}}'],
    ['xml garbage', 'application/xml', '<<<not xml'],
    ['xml bomb', 'application/xml', '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><policy>&c;</policy>'],
    ['gzip garbage', 'application/gzip', '\x1f\x8b\x08\x00garbage'],
    ['wrong content type', 'text/csv', 'a,b,c'],
  ];
  for (const [method, path] of routes) {
    test(`${method.toUpperCase()} ${path}`, async () => {
      for (const [name, type, body] of junk) {
        const res = await (request(ctx.app) as unknown as Record<string, (p: string) => request.Test>)[method]!(path).set(bearer(admin)).set('Content-Type', type).send(body);
        // Routes whose body is optional (rotate, enrollment tokens) may ignore a body they cannot read.
        const optional = path.endsWith('/rotate') || path.endsWith('/enrollment-tokens');
        if (optional && res.status < 300) continue;
        assert.ok(res.status >= 400 && res.status < 500, `${name}: got ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
        assert.equal(typeof res.body?.error?.code, 'string', `${name}: error body`);
      }
    });
  }

  // A security review: `clockSkewMs: 1e300` in a robot report gave a 500 ("cannot store REAL value in INTEGER
  // column"). 1e300 is an integer to JavaScript, so `.int()` alone lets it through: every number is bounded.
  test('every numeric field of every body is bounded: huge, negative and fractional numbers get a 422', async () => {
    const robot = 'numbers-bot';
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: robot, labels: {} }).expect(201);
    const t = await request(ctx.app).post(`/v1/robots/${robot}/enrollment-tokens`).set(bearer(admin)).send({}).expect(201);
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const robotToken = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(robot, key) }).expect(200)).body.token as string;
    ctx.secrets.add(robotToken);

    const fields: [method: 'post' | 'put', path: string, token: () => string, base: Record<string, unknown>, field: string][] = [
      ['post', '/v1/keystores', () => admin, { name: 'numbers' }, 'domainId'],
      ['post', '/v1/keystores', () => admin, { name: 'numbers' }, 'validityDays'],
      ['post', '/v1/keystores', () => admin, { name: 'numbers' }, 'enclaveValidityDays'],
      ['post', '/v1/keystores', () => admin, { name: 'numbers' }, 'backdateSeconds'],
      ['post', '/v1/keystores/ks/enclaves', () => admin, { path: '/numbers' }, 'validityDays'],
      ['post', '/v1/keystores/ks/enclaves:batch', () => admin, { paths: ['/numbers'] }, 'validityDays'],
      ['post', '/v1/keystores/ks/enclaves/e/rotate', () => admin, {}, 'validityDays'],
      ['post', `/v1/robots/${robot}/enrollment-tokens`, () => admin, { reenroll: true }, 'ttlSeconds'],
      ['post', '/v1/robot/report', () => robotToken, { revision: 'r' }, 'clockSkewMs'],
    ];
    for (const [method, path, token, base, field] of fields) {
      for (const value of [1e300, -1e300, 2 ** 53, 1.5, -1]) {
        const res = await request(ctx.app)[method](path).set(bearer(token())).send({ ...base, [field]: value });
        if (value === -1 && field === 'clockSkewMs') {
          assert.equal(res.status, 204, 'a robot clock may be behind');
          continue;
        }
        assert.equal(res.status, 422, `${path} ${field}=${value}: ${res.status} ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, 'invalid-input');
      }
    }
    assert.equal((await request(ctx.app).get('/v1/keystores/numbers').set(bearer(admin))).status, 404, 'nothing was stored');
  });

  test('odd URLs', async () => {
    for (const url of ['/v1/keystores/%00/enclaves', '/v1/keystores/ks/enclaves/%2e%2e/%2e%2e/etc', '/v1/keystores/ks/enclaves/' + 'a/'.repeat(500), '/v1/users/%E0%A4%A', '/v1/audit?limit=abc&since[]=1']) {
      const res = await request(ctx.app).get(url).set(bearer(admin));
      assert.ok(res.status >= 400 && res.status < 500, `${url}: ${res.status}`);
    }
  });
});
