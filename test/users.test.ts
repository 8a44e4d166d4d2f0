import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditService } from '../server/audit/audit.service.js';
import { openStore } from '../server/store/open.js';
import { UsersService } from '../server/users/users.service.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { freshDatabase, TEST_STORE, type TestDatabase } from './helpers/postgres.js';

describe('user management', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
  });
  after(() => ctx.close());

  test('admin creates, lists, reads, updates and deletes users', async () => {
    const created = await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'acme', password: 'acme-password-1', role: 'member' });
    assert.equal(created.status, 201);
    assert.deepEqual(Object.keys(created.body).sort(), ['createdAt', 'name', 'role', 'updatedAt']);
    const list = await request(ctx.app).get('/v1/users').set(bearer(admin));
    assert.deepEqual(list.body.users.map((u: { name: string }) => u.name), ['acme', 'admin']);
    assert.ok(!JSON.stringify(list.body).includes('scrypt'), 'no password hash in responses');
    assert.equal((await request(ctx.app).get('/v1/users/acme').set(bearer(admin))).body.role, 'member');
    const patched = await request(ctx.app).patch('/v1/users/acme').set(bearer(admin)).send({ role: 'admin' });
    assert.equal(patched.body.role, 'admin');
    await request(ctx.app).patch('/v1/users/acme').set(bearer(admin)).send({ role: 'member' }).expect(200);
    await request(ctx.app).delete('/v1/users/acme').set(bearer(admin)).expect(204);
    assert.equal((await request(ctx.app).get('/v1/users/acme').set(bearer(admin))).status, 404);
  });

  test('duplicate user → 409', async () => {
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'dup', password: 'dup-password-12' }).expect(201);
    const res = await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'dup', password: 'dup-password-12' });
    assert.equal(res.status, 409);
  });

  test('member gets 403 on every user-management route', async () => {
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'bob', password: 'bob-password-123' }).expect(201);
    const member = await ctx.login('bob', 'bob-password-123');
    const calls: [string, () => request.Test][] = [
      ['GET /v1/users', () => request(ctx.app).get('/v1/users')],
      ['POST /v1/users', () => request(ctx.app).post('/v1/users').send({ name: 'x', password: 'x-password-1234' })],
      ['GET /v1/users/admin', () => request(ctx.app).get('/v1/users/admin')],
      ['PATCH /v1/users/bob', () => request(ctx.app).patch('/v1/users/bob').send({ role: 'admin' })],
      ['DELETE /v1/users/admin', () => request(ctx.app).delete('/v1/users/admin')],
      ['GET /v1/audit', () => request(ctx.app).get('/v1/audit')],
      ['GET /v1/audit/verify', () => request(ctx.app).get('/v1/audit/verify')],
    ];
    for (const [name, call] of calls) {
      const res = await call().set(bearer(member));
      assert.equal(res.status, 403, name);
      assert.equal(res.body.error.code, 'forbidden');
    }
  });

  test('the last admin cannot be deleted or demoted', async () => {
    const del = await request(ctx.app).delete('/v1/users/admin').set(bearer(admin));
    assert.equal(del.status, 409);
    assert.equal(del.body.error.code, 'last-admin');
    const demote = await request(ctx.app).patch('/v1/users/admin').set(bearer(admin)).send({ role: 'member' });
    assert.equal(demote.status, 409);
    // With a second admin, demotion works, and the demoted admin's old token stops working.
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'second', password: 'second-password', role: 'admin' }).expect(201);
    const second = await ctx.login('second', 'second-password');
    await request(ctx.app).patch('/v1/users/second').set(bearer(admin)).send({ role: 'member' }).expect(200);
    assert.equal((await request(ctx.app).get('/v1/users').set(bearer(second))).status, 401);
  });

  test('password change takes effect and invalidates old tokens', async () => {
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'carol', password: 'carol-password-1' }).expect(201);
    const old = await ctx.login('carol', 'carol-password-1');
    await request(ctx.app).patch('/v1/users/carol').set(bearer(admin)).send({ password: 'carol-password-2' }).expect(200);
    ctx.secrets.add('carol-password-2');
    assert.equal((await request(ctx.app).post('/v1/auth/login').send({ username: 'carol', password: 'carol-password-1' })).status, 401);
    await ctx.login('carol', 'carol-password-2');
    assert.equal((await request(ctx.app).get('/v1/audit').set(bearer(old))).status, 401);
  });

  test('user changes are audited', async () => {
    const res = await request(ctx.app).get('/v1/audit?action=user.*&result=success&limit=100').set(bearer(admin));
    const actions = new Set(res.body.entries.map((e: { action: string }) => e.action));
    assert.deepEqual([...actions].sort(), ['user.create', 'user.delete', 'user.update']);
    const refused = await request(ctx.app).get('/v1/audit?action=user.manage&result=denied').set(bearer(admin));
    assert.ok(refused.body.entries.length > 0, "a member's refused user management is audited too");
  });

  // Last: it may delete the administrator these tests act as.
  test('the two last administrators deleted at once: exactly one goes', async () => {
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'ann', password: 'ann-password-123', role: 'admin' }).expect(201);
    const admins = async () => (await ctx.store.read((r) => r.users.list())).filter((u) => u.role === 'admin').map((u) => u.name);
    assert.deepEqual(await admins(), ['admin', 'ann']);
    const statuses = (await Promise.all(['admin', 'ann'].map((name) => request(ctx.app).delete(`/v1/users/${name}`).set(bearer(admin))))).map((r) => r.status);
    // The other one is refused as the last administrator, or (when the acting admin went first) has lost its token.
    assert.equal(statuses.filter((s) => s === 204).length, 1, `${statuses}`);
    assert.ok(statuses.every((s) => s === 204 || s === 409 || s === 401), `${statuses}`);
    assert.equal((await admins()).length, 1);
  });
});

describe('the first administrator', () => {
  test('two processes starting at once on one empty database create exactly one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-first-admin-'));
    let database: TestDatabase | undefined;
    if (TEST_STORE === 'postgres') database = await freshDatabase('first_admin');
    const where = database ? { url: database.url, poolSize: 2 } : { sqliteFile: path.join(dir, 'enclaves.db') };
    // Two stores on one database: two processes (on PostgreSQL, two replicas), each with its own connections.
    const [a, b] = [(await openStore(where)).store, (await openStore(where)).store];
    try {
      const services = [a, b].map((store) => new UsersService(store, new AuditService(store)));
      const made = await Promise.all(services.map((users, i) => users.createFirstAdmin(`root${i}`, 'first-admin-password')));
      assert.equal(made.filter(Boolean).length, 1, `created: ${made}`);
      const users = await a.read((r) => r.users.list());
      assert.deepEqual(users.map((u) => u.role), ['admin']);
      assert.equal(users[0]!.name, `root${made.indexOf(true)}`);
      const chain = await new AuditService(b).verify();
      assert.deepEqual([chain.ok, chain.entries], [true, 1]);
      assert.equal(await services[0]!.createFirstAdmin('late', 'first-admin-password'), false, 'a process starting later finds it');
    } finally {
      await a.close();
      await b.close();
      await database?.drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
