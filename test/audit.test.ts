import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';

describe('audit log', () => {
  let ctx: TestContext;
  let admin: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    for (const name of ['a1', 'a2', 'a3']) {
      await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name, password: `${name}-password-xyz` }).expect(201);
    }
  });
  after(() => ctx.close());

  test('filters by actor, action, since and limit', async () => {
    const all = (await request(ctx.app).get('/v1/audit').set(bearer(admin))).body.entries;
    assert.ok(all.length >= 5);
    assert.ok(all[0].id > all[1].id, 'newest first');
    const byAction = (await request(ctx.app).get('/v1/audit?action=user.create').set(bearer(admin))).body.entries;
    assert.ok(byAction.every((e: { action: string }) => e.action === 'user.create'));
    const byActor = (await request(ctx.app).get('/v1/audit?actor=admin&limit=2').set(bearer(admin))).body.entries;
    assert.equal(byActor.length, 2);
    const future = (await request(ctx.app).get('/v1/audit?since=2999-01-01T00:00:00Z').set(bearer(admin))).body.entries;
    assert.equal(future.length, 0);
    assert.equal((await request(ctx.app).get('/v1/audit?since=yesterday').set(bearer(admin))).status, 422);
    assert.equal((await request(ctx.app).get('/v1/audit?limit=0').set(bearer(admin))).status, 422);
  });

  test('filters by target (a substring, any case, wildcards literal) and until', async () => {
    const get = async (q: string) => (await request(ctx.app).get(`/v1/audit?${q}`).set(bearer(admin)).expect(200)).body.entries as { target: string | null; at: string; id: number }[];
    assert.deepEqual((await get('action=user.create&target=A2')).map((e) => e.target), ['a2']);
    assert.deepEqual(await get('target=a%25'), [], '% is a character, not a wildcard');
    assert.deepEqual(await get('target=a_'), [], '_ is a character, not a wildcard');
    const created = await get('action=user.create');
    const oldest = created[created.length - 1]!;
    const upTo = await get(`action=user.create&until=${encodeURIComponent(oldest.at)}`);
    assert.ok(upTo.length >= 1 && upTo.every((e) => e.at <= oldest.at));
    assert.ok(upTo.some((e) => e.id === oldest.id), 'until is inclusive');
    assert.deepEqual(await get('until=2000-01-01T00:00:00Z'), []);
    assert.equal((await request(ctx.app).get('/v1/audit?until=tomorrow').set(bearer(admin))).status, 422);
    assert.equal((await request(ctx.app).get('/v1/audit?target=').set(bearer(admin))).status, 422);
  });

  test('the chain verifies', async () => {
    const res = await request(ctx.app).get('/v1/audit/verify').set(bearer(admin));
    assert.equal(res.status, 200);
    assert.equal(res.body.ok, true);
    assert.ok(res.body.entries >= 5);
  });

  test('verification pages through the chain with the same result', async () => {
    const whole = await ctx.services.audit.verify();
    const paged = await ctx.services.audit.verify(2);
    assert.deepEqual(paged, whole);
    assert.equal(paged.ok, true);
  });

  test('concurrent writers extend one chain', async () => {
    const before = await ctx.services.audit.verify();
    assert.equal(before.ok, true);
    // Units of work started all at once, each reading the head and appending: none may fork or skip.
    const ids = await Promise.all(
      Array.from({ length: 40 }, (_, i) => ctx.services.audit.recordAlone({ actor: 'x', actorKind: 'system', action: 'test.concurrent', details: { i } })),
    );
    assert.deepEqual([...ids].sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => before.entries + 1 + i));
    const afterwards = await ctx.services.audit.verify();
    assert.equal(afterwards.ok, true);
    assert.equal(afterwards.entries, before.entries + 40);
  });

  /** What someone with the database in hand can do, outside the server's services. */
  const raw = (text: string) => ctx.store.tx((r) => r.sql.run(text));
  // SQLite has a trigger per statement kind; PostgreSQL one for UPDATE OR DELETE (and one for TRUNCATE).
  const dropTrigger = (name: string) => raw(ctx.store.dialect === 'postgres' ? `DROP TRIGGER IF EXISTS ${name} ON audit_log` : `DROP TRIGGER IF EXISTS ${name}`);

  test('the table refuses UPDATE and DELETE', async () => {
    await assert.rejects(raw("UPDATE audit_log SET actor = 'x' WHERE id = 1"), /append-only/);
    await assert.rejects(raw('DELETE FROM audit_log WHERE id = 1'), /append-only/);
  });

  test('an edited row is reported where the chain breaks', async () => {
    // Someone with the database file can drop the trigger; the hash chain still tells.
    await dropTrigger('audit_log_no_update');
    await raw("UPDATE audit_log SET actor = 'mallory' WHERE id = 3");
    const res = await request(ctx.app).get('/v1/audit/verify').set(bearer(admin));
    assert.equal(res.body.ok, false);
    assert.equal(res.body.brokenAt, 3);
    assert.match(res.body.reason, /does not match/);
  });

  test('a deleted row is reported too', async () => {
    await dropTrigger('audit_log_no_delete');
    await raw('UPDATE audit_log SET actor = (SELECT actor FROM audit_log WHERE id = 3) WHERE id = 3');
    await raw('DELETE FROM audit_log WHERE id = 2');
    const res = await request(ctx.app).get('/v1/audit/verify').set(bearer(admin));
    assert.equal(res.body.ok, false);
    assert.equal(res.body.brokenAt, 2);
  });

  test('secret-looking detail keys are never stored', async () => {
    await ctx.services.audit.recordAlone({ actor: 'x', actorKind: 'system', action: 'test.scrub', details: { keystore: 'ks', password: 'p', token: 't', privateKey: 'k' } });
    const [entry] = await ctx.services.audit.list({ action: 'test.scrub', limit: 1 });
    assert.deepEqual(entry!.details, { keystore: 'ks' });
  });
});
