import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import path from 'node:path';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';
import { FIXTURES } from './helpers/tools.js';
import { robotTokenVersion } from '../server/auth/tokens.js';

/** Every kind of change reaches a waiting robot quickly, and only the robots it concerns. */
describe('bundles follow every change', () => {
  let ctx: TestContext;
  let admin: string;
  const robotToken: Record<string, string> = {};
  const robotKey: Record<string, ReturnType<typeof deviceKey>> = {};

  const enrollRobot = async (name: string, labels: Record<string, string>) => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name, labels }).expect(201);
    const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(bearer(admin)).send({});
    ctx.secrets.add(t.body.token);
    const key = (robotKey[name] = deviceKey());
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    robotToken[name] = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, key) })).body.token;
    ctx.secrets.add(robotToken[name]!);
  };
  const bundle = (robot: string) => request(ctx.app).get('/v1/robot/bundle').set(bearer(robotToken[robot]!));
  const paths = (b: request.Response) => b.body.keystores.flatMap((k: { name: string; enclaves: { path: string }[] }) => k.enclaves.map((e) => `${k.name}:${e.path}`));

  /** Starts a long poll on the robot's current revision, runs the change, returns the answer and its delay. */
  const afterChange = async (robot: string, change: () => Promise<unknown>) => {
    const cur = await bundle(robot);
    const poll = request(ctx.app).get('/v1/robot/bundle?wait=20').set(bearer(robotToken[robot]!)).set('If-None-Match', `"${cur.body.revision}"`).then((r) => r);
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await change();
    const res = await poll;
    return { res, ms: Date.now() - t0, before: cur };
  };

  before(async () => {
    // The cache hears changes when the store's own commits wake the follower; its unprompted poll (a safety net)
    // is kept out of the way, or it could find the resync test's gap before that test looks.
    ctx = await makeTestApp({ followerPollMs: 3_600_000 });
    admin = await ctx.adminToken();
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/a', '/b', '/c', '/d', '/m/x'] }).expect(201);
    await enrollRobot('r1', { site: 'osaka' });
    await enrollRobot('r2', { site: 'kobe' });
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('a selector binding reaches matching robots only; a label change moves it', async () => {
    const { res, ms } = await afterChange('r1', () => request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/a', selector: { site: 'osaka' } }).expect(201));
    assert.equal(res.status, 200);
    assert.ok(ms < 1000, `${ms} ms`);
    assert.deepEqual(paths(res), ['ks:/a']);
    assert.deepEqual(paths(await bundle('r2')), []);
    const moved = await afterChange('r2', () => request(ctx.app).patch('/v1/robots/r2').set(bearer(admin)).send({ labels: { site: 'osaka' } }).expect(200));
    assert.deepEqual(paths(moved.res), ['ks:/a']);
  });

  test('rotation and governance changes produce a new revision with new bytes', async () => {
    const rot = await afterChange('r1', () => request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(bearer(admin)).expect(200));
    assert.equal(rot.res.status, 200);
    assert.notEqual(rot.res.body.keystores[0].enclaves[0].files['cert.pem'], rot.before.body.keystores[0].enclaves[0].files['cert.pem']);
    const gov = fs.readFileSync(path.join(FIXTURES, 'governance.default.xml'), 'utf8').replace('<rtps_protection_kind>SIGN</rtps_protection_kind>', '<rtps_protection_kind>ENCRYPT</rtps_protection_kind>');
    const g = await afterChange('r1', () => request(ctx.app).put('/v1/keystores/ks/governance').set(bearer(admin)).type('application/xml').send(gov).expect(200));
    assert.notEqual(g.res.body.keystores[0].enclaves[0].files['governance.p7s'], g.before.body.keystores[0].enclaves[0].files['governance.p7s']);
  });

  test('a revocation elsewhere in the keystore adds crl.pem; the revoked enclave leaves', async () => {
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/b', robot: 'r1' }).expect(201);
    const { res } = await afterChange('r1', () => request(ctx.app).post('/v1/keystores/ks/enclaves/b/revoke').set(bearer(admin)).expect(200));
    assert.deepEqual(paths(res), ['ks:/a']);
    assert.ok(res.body.keystores[0].enclaves[0].files['crl.pem'].includes('BEGIN X509 CRL'));
  });

  test('deleting an enclave removes it', async () => {
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/c', robot: 'r1' }).expect(201);
    const { res } = await afterChange('r1', () => request(ctx.app).delete('/v1/keystores/ks/enclaves/c').set(bearer(admin)).expect(204));
    assert.deepEqual(paths(res), ['ks:/a']);
  });

  test('deleting a grant removes the bindings made through it; deleting the user does too', async () => {
    for (const name of ['dev1', 'dev2']) {
      await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name, password: `${name}-password-long` }).expect(201);
    }
    const g1 = (await request(ctx.app).post('/v1/grants').set(bearer(admin)).send({ user: 'dev1', keystore: 'ks', pattern: '/d', capabilities: ['read', 'bind'] })).body;
    await request(ctx.app).post('/v1/grants').set(bearer(admin)).send({ user: 'dev2', keystore: 'ks', pattern: '/m/*', capabilities: ['read', 'bind'] }).expect(201);
    const dev1 = await ctx.login('dev1', 'dev1-password-long');
    const dev2 = await ctx.login('dev2', 'dev2-password-long');
    await request(ctx.app).post('/v1/bindings').set(bearer(dev1)).send({ keystore: 'ks', enclave: '/d', robot: 'r2' }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(bearer(dev2)).send({ keystore: 'ks', enclave: '/m/x', robot: 'r2' }).expect(201);
    assert.deepEqual(paths(await bundle('r2')).sort(), ['ks:/a', 'ks:/d', 'ks:/m/x']);
    const byGrant = await afterChange('r2', () => request(ctx.app).delete(`/v1/grants/${g1.id}`).set(bearer(admin)).expect(204));
    assert.deepEqual(paths(byGrant.res).sort(), ['ks:/a', 'ks:/m/x']);
    const byUser = await afterChange('r2', () => request(ctx.app).delete('/v1/users/dev2').set(bearer(admin)).expect(204));
    assert.deepEqual(paths(byUser.res), ['ks:/a']);
  });

  test('a change for one robot does not wake another robot', async () => {
    const cur = await bundle('r2');
    const poll = request(ctx.app).get('/v1/robot/bundle?wait=2').set(bearer(robotToken.r2!)).set('If-None-Match', `W/"${cur.body.revision}"`).then((r) => r);
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/d', robot: 'r1' }).expect(201);
    assert.equal((await poll).status, 304);
  });

  test('deleting a waiting robot answers its long poll with 401', async () => {
    const cur = await bundle('r2');
    const poll = request(ctx.app).get('/v1/robot/bundle?wait=20').set(bearer(robotToken.r2!)).set('If-None-Match', `"${cur.body.revision}"`).then((r) => r);
    await new Promise((r) => setTimeout(r, 100));
    await request(ctx.app).delete('/v1/robots/r2').set(bearer(admin)).expect(204);
    // The poll was parked by the fast path, which hands a robot gone meanwhile to the general stack to refuse.
    const res = await poll;
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, 'invalid-token');
  });

  test('the bundle is computed once per change, not per request', async () => {
    const first = await bundle('r1');
    const computeSpy = ctx.services.bundles as unknown as { cache: Map<string, unknown> };
    const cached = computeSpy.cache.get('r1');
    for (let i = 0; i < 5; i++) assert.equal((await bundle('r1')).body.revision, first.body.revision);
    assert.equal(computeSpy.cache.get('r1'), cached, 'the same cache entry served every request');
  });

  test('robots bound to the same enclaves share one serialized copy; each still gets its own revision', async () => {
    await enrollRobot('n1', { site: 'nara' });
    await enrollRobot('n2', { site: 'nara' });
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/d', selector: { site: 'nara' } }).expect(201);
    const [b1, b2] = [await bundle('n1'), await bundle('n2')];
    assert.deepEqual([b1.body.robot, b2.body.robot], ['n1', 'n2']);
    assert.deepEqual(b1.body.keystores, b2.body.keystores);
    assert.notEqual(b1.body.revision, b2.body.revision);
    const cache = (ctx.services.bundles as unknown as { cache: Map<string, { content: object }> }).cache;
    assert.ok(cache.get('n1')?.content instanceof Object);
    assert.equal(cache.get('n1')!.content, cache.get('n2')!.content, 'one shared content object, not a copy per robot');
  });

  test('the bundle fast path answers like the general stack: same security headers, request id, metrics; refusals go the general way', async () => {
    const fast = await bundle('r1').set('X-Request-Id', 'poll-42');
    // A query the fast path does not take sends the same request down the general middleware stack.
    const general = await request(ctx.app).get('/v1/robot/bundle?via=general').set(bearer(robotToken.r1!));
    assert.equal(fast.status, 200);
    assert.equal(general.status, 200);
    assert.equal(fast.headers['x-request-id'], 'poll-42');
    assert.match(general.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
    const volatile = new Set(['date', 'x-request-id', 'connection', 'keep-alive']);
    const headersOf = (r: request.Response) => Object.keys(r.headers).filter((k) => !volatile.has(k)).sort();
    assert.deepEqual(headersOf(fast), headersOf(general));
    for (const h of ['strict-transport-security', 'x-content-type-options', 'content-security-policy', 'cache-control', 'etag']) {
      assert.equal(fast.headers[h], general.headers[h], h);
    }
    assert.equal(fast.text, general.text);
    const forged = await request(ctx.app).get('/v1/robot/bundle?wait=1').set('Authorization', `Bearer ${robotToken.r1!.slice(0, -2)}xx`);
    assert.equal(forged.status, 401);
    assert.equal(forged.body.error.code, 'invalid-token');
    const metrics = (await request(ctx.app).get('/metrics')).text;
    assert.match(metrics, /enclave_http_requests_total\{method="GET",route="\/v1\/robot\/bundle",status="200"\} \d+/);
  });

  // A security review: 2,000 polls parked on one robot token took /health to 6.5 s, and 3,000 GETs wrote 3,000
  // bundle.deliver rows. A robot holds at most two polls, and a delivery is audited once per revision.
  test('one robot token holds at most two long polls: a newer one answers the oldest with 304', async () => {
    const cur = await bundle('r1');
    const etag = `"${cur.body.revision}"`;
    const started = Date.now();
    const polls: { res?: request.Response; at?: number }[] = [];
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 5; i++) {
      const slot: { res?: request.Response; at?: number } = {};
      polls.push(slot);
      pending.push(
        request(ctx.app)
          .get('/v1/robot/bundle?wait=20')
          .set(bearer(robotToken.r1!))
          .set('If-None-Match', etag)
          .then((r) => {
            slot.res = r;
            slot.at = Date.now() - started;
          }),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(polls.map((p) => p.res?.status), [304, 304, 304, undefined, undefined]);
    await request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(bearer(admin)).send({}).expect(200);
    await Promise.all(pending);
    assert.deepEqual(polls.map((p) => p.res?.status), [304, 304, 304, 200, 200]);
    assert.ok(polls.every((p) => p.at! < 5000), 'nobody waited for the 20 s timeout');
  });

  test('a delivery is audited once per robot and revision, however often it is fetched', async () => {
    const count = async () =>
      Number(
        (await ctx.store.read((r) => r.sql.get<{ n: number | string }>("SELECT count(*) AS n FROM audit_log WHERE action = 'bundle.deliver' AND actor = 'r1'")))!.n,
      );
    await bundle('r1').expect(200);
    const before = await count();
    for (let i = 0; i < 30; i++) await bundle('r1').expect(200);
    assert.equal(await count(), before);
    await request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(bearer(admin)).send({}).expect(200);
    for (let i = 0; i < 5; i++) await bundle('r1').expect(200);
    const rows = await count();
    assert.ok(paths(await bundle('r1')).includes('ks:/a'));
    assert.equal(rows, before + 1, 'the new revision, once');
  });

  test('a login that asks for its bundle gets it in the same answer: the bytes a bundle request gets, audited once, not cached', async () => {
    const deliveries = async () =>
      Number(
        (await ctx.store.read((r) => r.sql.get<{ n: number | string }>("SELECT count(*) AS n FROM audit_log WHERE action = 'bundle.deliver' AND actor = 'r1'")))!.n,
      );
    const plain = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', robotKey.r1!) }).expect(200);
    assert.deepEqual(Object.keys(plain.body).sort(), ['expiresAt', 'token']);
    // A new revision for r1, so the login's answer is its first delivery of it.
    await request(ctx.app).patch('/v1/robots/r1').set(bearer(admin)).send({ labels: { site: 'osaka', shift: 'night' } }).expect(200);
    const before = await deliveries();
    const boot = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', robotKey.r1!), bundle: true }).expect(200);
    ctx.secrets.add(boot.body.token);
    assert.equal(boot.headers['cache-control'], 'no-store');
    assert.match(boot.headers['content-type'] ?? '', /^application\/json/);
    const fetched = await request(ctx.app).get('/v1/robot/bundle').set(bearer(boot.body.token)).expect(200);
    assert.deepEqual(boot.body.bundle, fetched.body);
    assert.equal(fetched.headers.etag, `"${boot.body.bundle.revision}"`);
    assert.equal(await deliveries(), before + 1, 'the login delivered the revision; the fetch of the same one adds nothing');
    // The answer is checked against the enrollment the assertion was: a robot re-keyed in between gets none.
    const ver = (await ctx.store.read((r) => r.robots.get('r1')))!;
    assert.equal(await ctx.services.bundles.atLogin.prepare('r1', `${ver.keyId}/1970-01-01T00:00:00.000Z`), undefined);
    assert.ok(await ctx.services.bundles.atLogin.prepare('r1', robotTokenVersion(ver)));
    const bad = await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion('r1', robotKey.r1!), bundle: 'yes' });
    assert.equal(bad.status, 422);
  });

  // The cache hears changes from the change log; a follower that finds rows it never read (trimmed while it was
  // away) publishes a resync, and every cache must go.
  test('a resync drops every cache: an edit the cache never heard of reaches the waiting robot', async () => {
    await enrollRobot('q1', { site: 'quiet' });
    await request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/m/x', robot: 'q1' }).expect(201);
    const cur = await bundle('q1');
    assert.deepEqual(paths(cur), ['ks:/m/x']);
    const poll = request(ctx.app).get('/v1/robot/bundle?wait=20').set(bearer(robotToken.q1!)).set('If-None-Match', `"${cur.body.revision}"`).then((r) => r);
    await new Promise((r) => setTimeout(r, 100));
    // The binding goes behind the cache's back, and the change log skips an id, as when rows a follower had not
    // read yet were trimmed.
    await ctx.store.tx(async (r) => {
      await r.sql.run("DELETE FROM bindings WHERE robot = 'q1'");
      await r.sql.run('INSERT INTO change_log (id, at, change) SELECT max(id) + 2, ?, ? FROM change_log', [
        new Date().toISOString(),
        JSON.stringify({ kind: 'keystore', keystore: 'elsewhere' }),
      ]);
    });
    assert.equal((await bundle('q1')).body.revision, cur.body.revision, 'unheard, the cache still answers as before');
    // The next change made through the service wakes the follower, which finds the gap.
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'q2', labels: {} }).expect(201);
    const res = await poll;
    assert.equal(res.status, 200);
    assert.deepEqual(paths(res), []);
  });

  test('concurrent misses for one robot share one build; a hit and a parked poll read nothing', async () => {
    const bundles = ctx.services.bundles;
    const record = (await ctx.store.read((r) => r.robots.get('r1')))!;
    // A change that drops r1's entry (labels set to what they are).
    await request(ctx.app).patch('/v1/robots/r1').set(bearer(admin)).send({ labels: record.labels }).expect(200);
    const store = ctx.store as unknown as { read: (fn: unknown) => Promise<unknown> };
    const read = store.read;
    let reads = 0;
    store.read = function (this: unknown, fn: unknown) {
      reads++;
      return read.call(this, fn);
    };
    try {
      const calls = Array.from({ length: 20 }, () => bundles.current('r1'));
      assert.ok(calls.every((c) => c === calls[0]), 'one promise for every concurrent miss');
      const entries = await Promise.all(calls);
      assert.equal(reads, 1, 'one build');
      reads = 0;
      const hit = await bundles.current('r1');
      assert.equal(hit, entries[0]);
      assert.equal(await bundles.wait('r1', record.keyId!, hit.revision, 0), null);
      const gone = new AbortController();
      const parked = bundles.wait('r1', record.keyId!, hit.revision, 20, gone.signal);
      await new Promise((r) => setTimeout(r, 50));
      gone.abort();
      assert.equal(await parked, null);
      assert.equal(reads, 0, 'a hit costs no query');
    } finally {
      store.read = read;
    }
  });

  test('a build that hears a change while it reads is handed out once, not kept', async () => {
    const bundles = ctx.services.bundles;
    const cache = (bundles as unknown as { cache: Map<string, unknown> }).cache;
    ctx.store.changes.publish({ kind: 'robot', robot: 'r1' });
    assert.equal(cache.get('r1'), undefined);
    const building = bundles.current('r1');
    // Heard before the build's first read returns: it may have read rows this change replaced.
    ctx.store.changes.publish({ kind: 'robot', robot: 'r1' });
    const stale = await building;
    assert.equal(cache.get('r1'), undefined, 'not kept');
    const fresh = await bundles.current('r1');
    assert.notEqual(fresh, stale);
    assert.equal(cache.get('r1'), fresh);
    assert.equal(fresh.revision, stale.revision, 'nothing really changed');
  });

  test('a binding is made once: identical requests at once get one 201, the rest (and a reordered selector) 409', async () => {
    const make = (body: object) => request(ctx.app).post('/v1/bindings').set(bearer(admin)).send({ keystore: 'ks', enclave: '/m/x', ...body });
    const results = await Promise.all(Array.from({ length: 10 }, () => make({ selector: { zone: 'z1', site: 's1' } })));
    assert.deepEqual(results.map((r) => r.status).sort(), [201, ...Array(9).fill(409)]);
    const winner = results.find((r) => r.status === 201)!.body.id;
    for (const lost of results.filter((r) => r.status === 409)) {
      assert.equal(lost.body.error.code, 'binding-exists');
      assert.match(lost.body.error.message, new RegExp(winner));
    }
    assert.equal((await make({ selector: { site: 's1', zone: 'z1' } })).status, 409, 'the same selector, keys in another order');
    // Another selector, or a robot, on the same enclave is another binding.
    assert.equal((await make({ selector: { zone: 'z1' } })).status, 201);
    assert.equal((await make({ robot: 'r1' })).status, 201);
    assert.equal((await make({ robot: 'r1' })).status, 409);
  });

  test('a change heard after a build is kept but before the poll it serves is parked: the robot is looked at again', async () => {
    const bundles = ctx.services.bundles;
    const cache = (bundles as unknown as { cache: Map<string, unknown> }).cache;
    const record = (await ctx.store.read((r) => r.robots.get('r1')))!;
    const known = (await bundles.current('r1')).revision;
    ctx.store.changes.publish({ kind: 'robot', robot: 'r1' });
    const build = bundles.current('r1');
    // Runs before the poll below resumes (callbacks run in the order they were added): the entry goes while the
    // robot does not count as waiting yet.
    void build.then(() => ctx.store.changes.publish({ kind: 'robot', robot: 'r1' }));
    const gone = new AbortController();
    const parked = bundles.wait('r1', record.keyId!, known, 20, gone.signal);
    await build;
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(cache.get('r1'), 'rebuilt for the parked poll, which would otherwise wait out its 20 s on what it was given');
    gone.abort();
    assert.equal(await parked, null, 'nothing really changed');
  });

  test("a rotation rebuilds a waiting robot's bundle from its bound set: its bindings are not read again", async () => {
    const bindings = ctx.services.bindings as unknown as { enclavesFor: (...args: unknown[]) => Promise<unknown> };
    const enclavesFor = bindings.enclavesFor;
    let reads = 0;
    bindings.enclavesFor = function (this: unknown, ...args: unknown[]) {
      reads++;
      return enclavesFor.apply(this, args);
    };
    try {
      await bundle('r1');
      reads = 0;
      const rot = await afterChange('r1', () => request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(bearer(admin)).expect(200));
      assert.equal(rot.res.status, 200);
      const cert = (b: request.Response) => b.body.keystores[0].enclaves.find((e: { path: string }) => e.path === '/a').files['cert.pem'];
      assert.notEqual(cert(rot.res), cert(rot.before));
      assert.equal(reads, 0, 'the robot kept its bound set across the rotation');
      // Built from scratch (a change to the robot drops what it kept), the bundle is the same.
      ctx.store.changes.publish({ kind: 'robot', robot: 'r1' });
      const fresh = await bundle('r1');
      assert.equal(reads, 1);
      assert.equal(fresh.body.revision, rot.res.body.revision);
      assert.deepEqual(fresh.body.keystores, rot.res.body.keystores);
    } finally {
      bindings.enclavesFor = enclavesFor;
    }
  });

  test('an enclave or keystore deleted and made again under its name reaches no robot its old bindings named', async () => {
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/again'] }).expect(201);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks2' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks2/enclaves:batch').set(a).send({ paths: ['/other'] }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'ks', enclave: '/again', robot: 'r1' }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'ks2', enclave: '/other', selector: { site: 'osaka' } }).expect(201);
    const held = paths(await bundle('r1'));
    assert.ok(held.includes('ks:/again') && held.includes('ks2:/other'), held.join(' '));

    const delEnclave = await afterChange('r1', () => request(ctx.app).delete('/v1/keystores/ks/enclaves/again').set(a).expect(204));
    assert.ok(!paths(delEnclave.res).includes('ks:/again'));
    const remade = await afterChange('r1', async () => {
      await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/again'] }).expect(201);
      // Any change that makes the robot's bundle move, so the poll answers with what it holds now.
      await request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(a).expect(200);
    });
    assert.ok(!paths(remade.res).includes('ks:/again'), paths(remade.res).join(' '));

    const delKeystore = await afterChange('r1', () => request(ctx.app).delete('/v1/keystores/ks2').set(a).expect(204));
    assert.ok(!paths(delKeystore.res).some((p: string) => p.startsWith('ks2:')));
    const remadeKs = await afterChange('r1', async () => {
      await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks2' }).expect(201);
      await request(ctx.app).post('/v1/keystores/ks2/enclaves:batch').set(a).send({ paths: ['/other'] }).expect(201);
      await request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(a).expect(200);
    });
    assert.ok(!paths(remadeKs.res).some((p: string) => p.startsWith('ks2:')), paths(remadeKs.res).join(' '));
    assert.deepEqual(paths(await bundle('r1')), paths(remadeKs.res));
  });

  test('a robot that takes gzip gets the same bytes gzipped: private keys and its token stored as they are, never compressed', async () => {
    const server = http.createServer(ctx.app).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    const exchange = (path: string, headers: Record<string, string>, json?: unknown) =>
      new Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path, method: json ? 'POST' : 'GET', headers: json ? { ...headers, 'content-type': 'application/json' } : headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
        });
        req.on('error', reject);
        req.end(json && JSON.stringify(json));
      });
    try {
      const auth = { authorization: `Bearer ${robotToken.r1}` };
      const plain = await exchange('/v1/robot/bundle', { ...auth, 'accept-encoding': 'identity' });
      const gz = await exchange('/v1/robot/bundle', { ...auth, 'accept-encoding': 'gzip, deflate, br' });
      assert.equal(plain.headers['content-encoding'], undefined);
      assert.equal(gz.headers['content-encoding'], 'gzip');
      assert.equal(gz.headers.vary, 'Accept-Encoding');
      assert.equal(Number(gz.headers['content-length']), gz.body.length);
      assert.deepEqual(zlib.gunzipSync(gz.body), plain.body);
      assert.ok(gz.body.length * 2 < plain.body.length, `${gz.body.length} bytes gzipped, ${plain.body.length} plain`);
      const keys: string[] = JSON.parse(plain.body.toString()).keystores.flatMap((k: { enclaves: { files: Record<string, string> }[] }) => k.enclaves.map((e) => e.files['key.pem']));
      assert.ok(keys.length > 0);
      for (const key of keys) assert.ok(gz.body.includes(Buffer.from(JSON.stringify(key))), 'a private key stored in the gzip answer, not compressed');
      const refused = await exchange('/v1/robot/bundle', { ...auth, 'accept-encoding': 'gzip;q=0, identity' });
      assert.equal(refused.headers['content-encoding'], undefined);
      assert.deepEqual(refused.body, plain.body);

      const login = await exchange('/v1/auth/robot', { 'accept-encoding': 'gzip' }, { assertion: assertion('r1', robotKey.r1!), bundle: true });
      assert.equal(login.headers['content-encoding'], 'gzip');
      const answer = JSON.parse(zlib.gunzipSync(login.body).toString());
      ctx.secrets.add(answer.token);
      assert.ok(login.body.includes(Buffer.from(answer.token)), 'the token stored, not compressed');
      assert.deepEqual(answer.bundle, JSON.parse(plain.body.toString()));
    } finally {
      server.close();
    }
  });
});
