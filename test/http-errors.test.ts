import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';

describe('errors and input handling', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp({ jsonLimit: '2kb' });
    admin = await ctx.adminToken();
  });
  after(() => ctx.close());

  test('malformed JSON → 400 invalid-json', async () => {
    const res = await request(ctx.app).post('/v1/auth/login').set('Content-Type', 'application/json').send('{"username": "admin", ');
    assert.equal(res.status, 400);
    assert.deepEqual(res.body, { error: { code: 'invalid-json', message: 'request body is not valid JSON' } });
  });

  test('wrong types → 422 naming the field', async () => {
    const res = await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 42, password: 'long-enough-password' });
    assert.equal(res.status, 422);
    assert.equal(res.body.error.code, 'invalid-input');
    assert.match(res.body.error.message, /^name: /);
    const res2 = await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'ok', password: 'short', role: 'root' });
    assert.equal(res2.status, 422);
    const fields = res2.body.error.details.map((d: { field: string }) => d.field).sort();
    assert.deepEqual(fields, ['password', 'role']);
  });

  test('unknown fields are refused, not silently dropped', async () => {
    const res = await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'ok', password: 'long-enough-password', admin: true });
    assert.equal(res.status, 422);
  });

  test('oversized body → 413', async () => {
    const res = await request(ctx.app).post('/v1/auth/login').send({ username: 'admin', password: 'x'.repeat(5000) });
    assert.equal(res.status, 413);
    assert.equal(res.body.error.code, 'payload-too-large');
  });

  test('unknown route → 404 JSON', async () => {
    const res = await request(ctx.app).get('/v1/nope');
    assert.equal(res.status, 404);
    assert.equal(res.body.error.code, 'not-found');
  });

  test('errors never carry a stack trace or SQL', async () => {
    const res = await request(ctx.app).get('/v1/users/%27%20OR%201%3D1--').set(bearer(admin));
    assert.equal(res.status, 404);
    const text = JSON.stringify(res.body);
    assert.doesNotMatch(text, /at .*\.ts:\d+|SELECT|sqlite/i);
  });

  test('security headers are set and no CORS is offered', async () => {
    const res = await request(ctx.app).get('/health').set('Origin', 'https://evil.example');
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.ok(res.headers['strict-transport-security']);
    assert.equal(res.headers['access-control-allow-origin'], undefined);
    assert.equal(res.headers['x-powered-by'], undefined);
    assert.ok(res.headers['x-request-id']);
  });

  test('health, ready and metrics', async () => {
    assert.deepEqual((await request(ctx.app).get('/health')).body, { status: 'ok' });
    assert.deepEqual((await request(ctx.app).get('/ready')).body, { status: 'ready' });
    const m = await request(ctx.app).get('/metrics');
    assert.equal(m.status, 200);
    assert.match(m.text, /enclave_http_requests_total\{method="GET",route="\/health",status="200"\} \d+/);
    assert.match(m.text, /enclave_http_request_duration_seconds_bucket/);
  });
});
