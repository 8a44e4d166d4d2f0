import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import request from 'supertest';
import { writeTarGz } from '../server/keystores/archive.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';

describe('expensive bodies are refused early', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'ks' }).expect(201);
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('an anonymous upload is refused before its body is read; Content-Encoding is never inflated', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(8 * 1024 * 1024));
    const anon = await request(ctx.app).put('/v1/keystores/ks/enclaves/a/policy').set('Content-Type', 'application/gzip').set('Content-Encoding', 'gzip').send(bomb);
    assert.equal(anon.status, 401);
    const anonImport = await request(ctx.app).post('/v1/keystores/x/import').set('Content-Type', 'application/gzip').send(bomb);
    assert.equal(anonImport.status, 401);
    const encoded = await request(ctx.app).post('/v1/keystores/x/import').set(bearer(admin)).set('Content-Type', 'application/gzip').set('Content-Encoding', 'gzip').send(bomb);
    assert.equal(encoded.status, 415);
    const json = await request(ctx.app).post('/v1/auth/login').set('Content-Type', 'application/json').set('Content-Encoding', 'gzip').send(zlib.gzipSync('{"username":"a","password":"b"}'));
    assert.equal(json.status, 415);
  });

  test('a policy archive whose includes repeat a large text is refused, not expanded', async () => {
    const big = `<profile><topics publish="ALLOW"><topic>${'x'.repeat(200_000)}</topic></topics></profile>`;
    const includes = Array.from({ length: 100 }, () => '<xi:include href="big.xml" xpointer="xpointer(/profile/*)"/>').join('');
    const main = `<policy version="0.2.0" xmlns:xi="http://www.w3.org/2001/XInclude"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n">${includes}</profile></profiles></enclave></enclaves></policy>`;
    const archive = await writeTarGz([
      { path: 'p.policy.xml', type: 'file', content: main },
      { path: 'big.xml', type: 'file', content: big },
    ]);
    const t0 = Date.now();
    const res = await request(ctx.app).post('/v1/keystores/ks/enclaves').set(bearer(admin)).send({ path: '/a', policyArchive: archive.toString('base64') });
    assert.equal(res.status, 422);
    assert.match(res.body.error.message, /characters of text/);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  test('a member without rights gets their 404 before the policy is parsed', async () => {
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'nobody', password: 'nobody-password-1' }).expect(201);
    const member = await ctx.login('nobody', 'nobody-password-1');
    const res = await request(ctx.app).post('/v1/keystores/ks/enclaves').set(bearer(member)).send({ path: '/a', policyArchive: 'bm90IGFuIGFyY2hpdmU=' });
    assert.equal(res.status, 404);
  });
});
