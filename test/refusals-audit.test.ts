import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import request from 'supertest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditService } from '../server/audit/audit.service.js';
import { RefusalLog } from '../server/audit/refusals.js';
import { bearer, makeTestApp, makeTestStore, type TestContext } from './helpers/app.js';

interface Entry {
  actor: string;
  action: string;
  target: string | null;
  result: string;
  details: { reason?: string; repeated?: number; request?: string } | null;
}

/**
 * A security review: a member's refused bind, a 404 on an enclave they may not read and a refused keystore
 * creation left no trace, while the README says every access is audited. Refusals are audited now, bounded.
 */
describe('refused attempts are audited, and a flood of them is bounded', () => {
  let t = Date.now();
  let ctx: TestContext;
  let admin: Record<string, string>;
  let member: Record<string, string>;

  before(async () => {
    ctx = await makeTestApp({ now: () => new Date(t) });
    admin = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(admin).send({ name: 'fleet' }).expect(201);
    await request(ctx.app).post('/v1/keystores/fleet/enclaves:batch').set(admin).send({ paths: ['/acme/cam', '/secret/plan'] }).expect(201);
    await request(ctx.app).post('/v1/robots').set(admin).send({ name: 'other-bot', labels: { tenant: 'other' } }).expect(201);
    await request(ctx.app).post('/v1/users').set(admin).send({ name: 'acme', password: 'acme-password-123' }).expect(201);
    await request(ctx.app)
      .post('/v1/grants')
      .set(admin)
      .send({ user: 'acme', keystore: 'fleet', pattern: '/acme/**', capabilities: ['read', 'bind'], robotSelector: { tenant: 'acme' } })
      .expect(201);
    member = bearer(await ctx.login('acme', 'acme-password-123'));
  });
  after(async () => {
    await ctx.services.refusals.close();
    await ctx.services.bundles.close();
    await ctx.close();
  });

  const denied = async (): Promise<Entry[]> =>
    (await request(ctx.app).get('/v1/audit?result=denied&limit=1000').set(admin).expect(200)).body.entries as Entry[];

  test('a refused keystore creation, a hidden enclave and a refused bind each leave an entry with the reason', async () => {
    assert.equal((await request(ctx.app).post('/v1/keystores').set(member).send({ name: 'mine' })).status, 403);
    assert.equal((await request(ctx.app).get('/v1/keystores/fleet/enclaves/secret/plan').set(member)).status, 404);
    assert.equal((await request(ctx.app).post('/v1/keystores/fleet/enclaves/acme/cam/rotate').set(member).send({})).status, 403);
    const entries = await denied();
    const find = (action: string) => entries.find((e) => e.action === action && e.actor === 'acme');
    assert.equal(find('keystore.create')?.details?.reason, 'admin-only');
    assert.deepEqual([find('enclave.read')?.target, find('enclave.read')?.details?.reason], ['fleet:/secret/plan', 'no-grant']);
    assert.equal(find('enclave.manage')?.target, 'fleet:/acme/cam');
    assert.equal(find('enclave.read')?.details?.request, 'GET /v1/keystores/fleet/enclaves/secret/plan');
    // The member's answer is the same 404 as for an enclave that does not exist: the log knows, they don't.
    const absent = await request(ctx.app).get('/v1/keystores/fleet/enclaves/acme/nothing_here').set(member);
    const hidden = await request(ctx.app).get('/v1/keystores/fleet/enclaves/secret/plan').set(member);
    assert.equal(absent.status, hidden.status);
  });

  test('a refused bind to a robot outside the selector is audited (the member is told the robot does not exist)', async () => {
    const res = await request(ctx.app).post('/v1/bindings').set(member).send({ keystore: 'fleet', enclave: '/acme/cam', robot: 'other-bot' });
    assert.equal(res.status, 404);
    const e = (await denied()).find((x) => x.action === 'enclave.bind' && x.target === 'robot:other-bot');
    assert.equal(e?.details?.reason, 'outside-robot-selector');
    const bySelector = await request(ctx.app).post('/v1/bindings').set(member).send({ keystore: 'fleet', enclave: '/acme/cam', selector: { tenant: 'other' } });
    assert.equal(bySelector.status, 403);
    const s = (await denied()).find((x) => x.action === 'enclave.bind' && x.target === 'fleet:/acme/cam');
    assert.equal(s?.details?.reason, 'outside-robot-selector');
  });

  test('the same refusal repeated is one entry plus one summary per window', async () => {
    const before = (await denied()).length;
    for (let i = 0; i < 50; i++) await request(ctx.app).get('/v1/users').set(member).expect(403);
    const during = await denied();
    assert.equal(during.length - before, 1, 'the first one at once');
    t += 61_000;
    await ctx.services.refusals.flush();
    const after = await denied();
    const summary = after.find((e) => e.action === 'user.manage' && e.details?.repeated !== undefined);
    assert.equal(summary?.details?.repeated, 49);
  });

  test('varying the target cannot grow the log faster than the per-actor bound', async () => {
    t += 61_000;
    await ctx.services.refusals.flush();
    const before = (await denied()).length;
    for (let i = 0; i < 300; i++) await request(ctx.app).get(`/v1/keystores/fleet/enclaves/secret/n${i}`).set(member).expect(404);
    await ctx.services.refusals.flush();
    const added = (await denied()).length - before;
    assert.ok(added <= 101, `${added} entries for 300 refusals`);
    assert.ok((await denied()).some((e) => e.action === 'access.denied' && e.details?.reason === 'too-many-refusals'));
    assert.equal((await request(ctx.app).get('/v1/audit/verify').set(admin)).body.ok, true);
  });
});

describe('a refusal the database cannot record', () => {
  test('is reported to the log, never thrown at the request answering it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-refusals-'));
    const { store, drop } = await makeTestStore(dir);
    await store.close();
    try {
      const errors: unknown[] = [];
      const log = new RefusalLog(new AuditService(store), () => 0, { windowMs: 60_000, maxDistinctPerActor: 100 }, (err) => errors.push(err));
      await log.record('acme', 'user', { capability: 'user:manage', reason: 'admin-only' }, 'GET /v1/users');
      assert.equal(errors.length, 1);
      await log.close();
    } finally {
      await drop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
