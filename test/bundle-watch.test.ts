import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

interface Watched {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Each bundle line, parsed, with whether it came before the answer ended. */
  lines: { revision: string; body: unknown; beforeEnd: boolean }[];
  ended: Promise<void>;
  /** Resolves once `n` lines have come. */
  lineCount(n: number): Promise<void>;
  close(): void;
}

/** A watch (`GET /v1/robot/bundle?watch=S`) read as a robot reads it: each line as it arrives, gunzipped on the fly. */
describe('a watch delivers each new bundle on one open answer', () => {
  let ctx: TestContext;
  let admin: string;
  let server: http.Server;
  let port: number;
  const token: Record<string, string> = {};

  const enroll = async (name: string) => {
    await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name, labels: { fleet: 'w' } }).expect(201);
    const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(bearer(admin)).send({});
    ctx.secrets.add(t.body.token);
    const key = deviceKey();
    await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    token[name] = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, key) })).body.token;
    ctx.secrets.add(token[name]!);
  };
  const current = async (robot: string) => (await request(ctx.app).get('/v1/robot/bundle').set(bearer(token[robot]!)).expect(200)).body as { revision: string };
  const rotate = () => request(ctx.app).post('/v1/keystores/ks/enclaves/a/rotate').set(bearer(admin)).expect(200);

  const watch = (robot: string, query: string, headers: Record<string, string> = {}) =>
    new Promise<Watched>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: `/v1/robot/bundle?${query}`, headers: { authorization: `Bearer ${token[robot]}`, ...headers } }, (res) => {
        const lines: Watched['lines'] = [];
        const waiting: { n: number; resolve: () => void }[] = [];
        let ended = false;
        let rest = '';
        const body = res.headers['content-encoding'] === 'gzip' ? res.pipe(zlib.createGunzip()) : res;
        body.on('data', (chunk: Buffer) => {
          const text = rest + chunk.toString('utf8');
          const parts = text.split('\n');
          rest = parts.pop()!;
          for (const line of parts) {
            if (!line) continue;
            const parsed = JSON.parse(line) as { revision: string };
            lines.push({ revision: parsed.revision, body: parsed, beforeEnd: !ended });
          }
          for (const w of waiting.filter((w) => lines.length >= w.n)) w.resolve();
        });
        const endedP = new Promise<void>((done) => body.on('end', () => ((ended = true), done())));
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          lines,
          ended: endedP,
          lineCount: (n) => (lines.length >= n ? Promise.resolve() : new Promise((r) => waiting.push({ n, resolve: r }))),
          close: () => req.destroy(),
        });
      });
      req.on('error', reject);
    });

  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    const a = bearer(admin);
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'ks' }).expect(201);
    await request(ctx.app).post('/v1/keystores/ks/enclaves:batch').set(a).send({ paths: ['/a'] }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'ks', enclave: '/a', selector: { fleet: 'w' } }).expect(201);
    for (const name of ['w1', 'w2', 'w3']) await enroll(name);
    server = http.createServer(ctx.app).listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    ctx.services.bundles.close();
    await ctx.close();
  });

  test('the current bundle at once, each rotation as it happens, in gzip members read one by one; the answer ends after `watch` seconds', async () => {
    const before = await current('w1');
    const w = await watch('w1', 'watch=4', { 'accept-encoding': 'gzip' });
    assert.equal(w.status, 200);
    assert.equal(w.headers['content-type'], 'application/x-ndjson');
    assert.equal(w.headers['content-encoding'], 'gzip');
    assert.equal(w.headers['cache-control'], 'no-store');
    assert.equal(w.headers['x-content-type-options'], 'nosniff');
    await w.lineCount(1);
    assert.equal(w.lines[0]!.revision, before.revision);
    assert.deepEqual(w.lines[0]!.body, await current('w1'));
    await rotate();
    await w.lineCount(2);
    const after1 = await current('w1');
    assert.notEqual(after1.revision, before.revision);
    assert.deepEqual(w.lines[1]!.body, after1);
    await rotate();
    await w.lineCount(3);
    assert.equal(w.lines[2]!.revision, (await current('w1')).revision);
    assert.ok(w.lines.every((l) => l.beforeEnd), 'every bundle came while the answer was still open');
    await w.ended;
    assert.equal(w.lines.length, 3);
  });

  test('with If-None-Match of the current revision nothing comes until a change; without gzip the lines are plain', async () => {
    const cur = await current('w2');
    const w = await watch('w2', 'watch=3', { 'if-none-match': `"${cur.revision}"`, 'accept-encoding': 'identity' });
    assert.equal(w.headers['content-encoding'], undefined);
    await rotate();
    await w.lineCount(1);
    assert.equal(w.lines[0]!.revision, (await current('w2')).revision);
    await w.ended;
    assert.equal(w.lines.length, 1);
  });

  test('each revision a watch delivers is audited once', async () => {
    const w = await watch('w3', 'watch=2');
    await w.lineCount(1);
    await rotate();
    await w.lineCount(2);
    await w.ended;
    const rows = (await request(ctx.app).get('/v1/audit?action=bundle.deliver&limit=100').set(bearer(admin)).expect(200)).body.entries as { actor: string; details: { revision: string } }[];
    const mine = rows.filter((r) => r.actor === 'w3').map((r) => r.details.revision);
    for (const l of w.lines) assert.equal(mine.filter((rev) => rev === l.revision).length, 1, l.revision);
  });

  test('a newer poll of the robot ends its oldest watch; a robot deleted while watching is ended, then refused', async () => {
    const cur = await current('w3');
    const inm = { 'if-none-match': `"${cur.revision}"` };
    const first = await watch('w3', 'watch=30', inm);
    const second = await watch('w3', 'watch=30', inm);
    const third = await watch('w3', 'watch=30', inm);
    await first.ended;
    assert.equal(first.lines.length, 0);
    await request(ctx.app).delete('/v1/robots/w3').set(bearer(admin)).expect(204);
    await Promise.all([second.ended, third.ended]);
    const again = await watch('w3', 'watch=30', inm);
    assert.equal(again.status, 401);
    await again.ended;
  });

  test('a watch through the general stack (another query) answers alike; watch=0 and watch=61 are refused', async () => {
    const w = await watch('w1', 'watch=1&x=1');
    assert.equal(w.status, 200);
    assert.equal(w.headers['content-type'], 'application/x-ndjson');
    await w.ended;
    assert.equal(w.lines.length, 1);
    assert.equal(w.lines[0]!.revision, (await current('w1')).revision);
    for (const q of ['watch=0', 'watch=61']) {
      const r = await request(ctx.app).get(`/v1/robot/bundle?${q}`).set(bearer(token.w1!));
      assert.equal(r.status, 422, q);
    }
  });
});
