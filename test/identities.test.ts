import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';
import { ConfigError, parseCommandLine } from '../server/config.js';
import { ctl, describeRun, tempDir, type CtlResult } from './helpers/ctl.js';
import { pinnedRequest, startServer, type ServerProcess } from './helpers/server-process.js';
import { ddsPairCheck, ddsUnavailable, openssl, untar, writeEnclave } from './helpers/tools.js';
import type { Express } from 'express';
import { buildCsr, newIdentityKey } from '../client/agent/csr.js';
import { createApp, servicesOf } from '../server/app.js';
import { createLogger } from '../server/logger.js';
import { readCrl } from '../server/pki/index.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const binaryParser = (res: request.Response, cb: (err: Error | null, body: Buffer) => void) => {
  const stream = res as unknown as NodeJS.ReadableStream;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => cb(null, Buffer.concat(chunks)));
};

/** An openssl run that must succeed: its stdout. */
function ok(args: string[], input?: string): string {
  const r = openssl(args, input);
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.out}`);
  return r.stdout;
}

/** A robot made, enrolled with a fresh device key and logged in on `ctx`'s app: its token. `claims`: the assertion's times. */
async function enrolledRobot(ctx: TestContext, name: string, claims: Record<string, unknown> = {}): Promise<string> {
  const a = bearer(await ctx.adminToken());
  await request(ctx.app).post('/v1/robots').set(a).send({ name }).expect(201);
  const tk = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(a).send({}).expect(201);
  ctx.secrets.add(tk.body.token);
  const key = deviceKey();
  await request(ctx.app).post('/v1/enroll').send({ token: tk.body.token, publicKey: key.publicKeyPem }).expect(201);
  const token = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, key, claims) }).expect(200)).body.token as string;
  ctx.secrets.add(token);
  return token;
}

/** The keystore's CRL as stored. */
const storedCrl = async (ctx: TestContext, keystore: string): Promise<{ crl_pem: string | null }> => (await ctx.store.read((r) => r.keystores.get(keystore)))!;

/** The enclave of a bundle (or undefined). */
function enclaveIn(bundle: Json, keystore: string, p: string): Json | undefined {
  return (bundle.keystores as Json[]).find((k) => k.name === keystore)?.enclaves.find((e: Json) => e.path === p);
}

describe('per-robot enclave identities', () => {
  let ctx: TestContext;
  let admin: string;
  let work: string;
  /** The test's clock: starts at the real time (tokens and assertions need it) and only moves when a test moves it. */
  let clock = Date.now();
  let n = 0;
  const app = () => request(ctx.app);
  const A = () => bearer(admin);

  before(async () => {
    // Re-issue revocations are batched on a timer; this test signs the batch itself (`crls.flush`), never by waiting.
    ctx = await makeTestApp({ now: () => new Date(clock), crlBatchMs: 3_600_000 });
    admin = await ctx.adminToken();
    work = path.join(ctx.dir, 'work');
    fs.mkdirSync(work);
  });
  after(async () => {
    await ctx.services.crls.close();
    ctx.services.bundles.close();
    await ctx.close();
  });

  /** A P-256 key and a CSR for it, both made by openssl (`req -new`), with a subject the server must ignore. */
  function csr(opts: { curve?: string; subject?: string } = {}): { keyFile: string; keyPem: string; csrPem: string } {
    const dir = fs.mkdtempSync(path.join(work, 'csr-'));
    const keyFile = path.join(dir, 'key.pem');
    ok(['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${opts.curve ?? 'P-256'}`, '-out', keyFile]);
    ok(['req', '-new', '-key', keyFile, '-subj', opts.subject ?? '/CN=whatever-the-robot-says/O=ignored', '-out', path.join(dir, 'csr.pem')]);
    return { keyFile, keyPem: fs.readFileSync(keyFile, 'utf8'), csrPem: fs.readFileSync(path.join(dir, 'csr.pem'), 'utf8') };
  }

  /** An assertion's times from the test's clock, which the rate-limit test moves ahead of the real one. */
  const atClock = () => ({ iat: Math.floor(clock / 1000), exp: Math.floor(clock / 1000) + 120 });

  async function robot(name: string, labels: Record<string, string> = {}): Promise<string> {
    await app().post('/v1/robots').set(A()).send({ name, labels }).expect(201);
    const t = await app().post(`/v1/robots/${name}/enrollment-tokens`).set(A()).send({}).expect(201);
    ctx.secrets.add(t.body.token);
    const key: DeviceKey = deviceKey();
    await app().post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const login = await app().post('/v1/auth/robot').send({ assertion: assertion(name, key, atClock()) }).expect(200);
    ctx.secrets.add(login.body.token);
    return login.body.token as string;
  }

  async function keystore(identityMode?: 'shared' | 'per-robot'): Promise<{ name: string; ca: string; caFile: string }> {
    const name = `ks${++n}`;
    const res = await app().post('/v1/keystores').set(A()).send({ name, ...(identityMode ? { identityMode } : {}) }).expect(201);
    const caFile = path.join(work, `${name}.ca.pem`);
    fs.writeFileSync(caFile, res.body.identityCa.certificate);
    return { name, ca: res.body.identityCa.certificate, caFile };
  }

  const issue = (token: string, keystore: string, enclave: string, csrPem: string) =>
    app().post('/v1/robot/identity').set(bearer(token)).send({ keystore, enclave, csr: csrPem });
  const bundleOf = async (token: string) => (await app().get('/v1/robot/bundle').set(bearer(token)).expect(200)).body as Json;
  const crlOf = async (keystore: string) => (await app().get(`/v1/keystores/${keystore}`).set(A()).expect(200)).body as Json;
  /** The serials a keystore's CRL lists, as `openssl crl -text` prints them (upper-case hex). */
  async function crlSerials(keystore: string, caFile: string): Promise<string[]> {
    const row = await storedCrl(ctx, keystore);
    if (!row.crl_pem) return [];
    const file = path.join(work, `${keystore}.crl.pem`);
    fs.writeFileSync(file, row.crl_pem);
    const text = ok(['crl', '-in', file, '-noout', '-text', '-CAfile', caFile]);
    return [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!).sort();
  }
  /** openssl verify at a time inside the certificate's validity (derived from the certificate, not today). */
  function verifyAt(caFile: string, certPem: string, crlPem?: string): { status: number; out: string } {
    const file = path.join(work, `cert-${++n}.pem`);
    fs.writeFileSync(file, certPem);
    const at = Math.floor(new Date(new X509Certificate(certPem).validFrom).getTime() / 1000) + 3600;
    const args = ['verify', '-attime', String(at), '-CAfile', caFile];
    if (crlPem) {
      const crlFile = path.join(work, `crl-${n}.pem`);
      fs.writeFileSync(crlFile, crlPem);
      args.push('-crl_check', '-CRLfile', crlFile);
    }
    return openssl([...args, file]);
  }

  test('identityMode on keystores and enclaves: default shared, inherited, overridable, validated', async () => {
    const shared = await keystore();
    assert.equal((await app().get(`/v1/keystores/${shared.name}`).set(A()).expect(200)).body.identityMode, 'shared');
    const ks = await keystore('per-robot');
    const keystoreView = (await app().get(`/v1/keystores/${ks.name}`).set(A()).expect(200)).body;
    assert.equal(keystoreView.identityMode, 'per-robot');
    const inherited = await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/fleet/driver' }).expect(201);
    assert.equal(inherited.body.identityMode, 'per-robot');
    assert.equal(inherited.body.serial, '');
    assert.equal(inherited.body.subject, 'CN=/fleet/driver');
    assert.equal(inherited.body.certificate, undefined, 'a per-robot enclave has no shared certificate');
    const own = await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/fleet/shared_one', identityMode: 'shared' }).expect(201);
    assert.equal(own.body.identityMode, 'shared');
    assert.match(own.body.certificate, /BEGIN CERTIFICATE/);
    const batch = await app().post(`/v1/keystores/${shared.name}/enclaves:batch`).set(A()).send({ paths: ['/a', '/b'], identityMode: 'per-robot' }).expect(201);
    assert.deepEqual(batch.body.enclaves.map((e: Json) => e.identityMode), ['per-robot', 'per-robot']);
    const list = (await app().get(`/v1/keystores/${ks.name}/enclaves`).set(A()).expect(200)).body.enclaves as Json[];
    assert.deepEqual(list.map((e) => [e.path, e.identityMode]), [['/fleet/driver', 'per-robot'], ['/fleet/shared_one', 'shared']]);
    const bad = await app().post('/v1/keystores').set(A()).send({ name: 'bad_mode', identityMode: 'per-fleet' });
    assert.equal(bad.status, 422);
    assert.match(bad.body.error.message, /identityMode/);
    assert.equal((await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/x', identityMode: 'mine' })).status, 422);
    // The server keeps no enclave key for a per-robot enclave, and the database refuses one.
    const stored = await ctx.store.read((r) => r.sql.get<Json>('SELECT key_sealed, cert_pem FROM enclaves WHERE keystore = ? AND path = ?', [ks.name, '/fleet/driver']));
    assert.deepEqual({ ...stored }, { key_sealed: '', cert_pem: '' });
    await assert.rejects(
      ctx.store.tx((r) => r.sql.run("UPDATE enclaves SET key_sealed = 'x' WHERE keystore = ? AND path = ?", [ks.name, '/fleet/driver'])),
      /no server-side key/,
    );
  });

  test('two robots bound to one per-robot enclave: own keys, own serials, same subject, same CA; verified by openssl and Node', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/fleet/amr/driver' }).expect(201);
    const shared = await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/fleet/amr/reference', identityMode: 'shared' }).expect(201);
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/fleet/amr/driver', selector: { fleet: 'amr' } }).expect(201);
    const ta = await robot('amr-a', { fleet: 'amr' });
    const tb = await robot('amr-b', { fleet: 'amr' });

    // Before a robot asks: the enclave is in its bundle with the shared parts, and no key or certificate.
    const before = await bundleOf(ta);
    const e0 = enclaveIn(before, ks.name, '/fleet/amr/driver')!;
    assert.equal(e0.identity, 'per-robot');
    assert.equal(e0.identitySerial, undefined);
    assert.deepEqual(Object.keys(e0.files).sort(), ['governance.p7s', 'identity_ca.cert.pem', 'permissions.p7s', 'permissions_ca.cert.pem']);
    assert.equal(e0.notAfter, new Date(new X509Certificate(ks.ca).validTo).toISOString(), "without a certificate: the CA's expiry");

    const ca = csr();
    const cb = csr({ subject: '/CN=robot-b.example/O=not-the-enclave' });
    const ra = await issue(ta, ks.name, '/fleet/amr/driver', ca.csrPem);
    assert.equal(ra.status, 201, JSON.stringify(ra.body));
    const rb = await issue(tb, ks.name, '/fleet/amr/driver', cb.csrPem);
    assert.equal(rb.status, 201, JSON.stringify(rb.body));
    assert.deepEqual(Object.keys(ra.body).sort(), ['certificate', 'enclave', 'keystore', 'notAfter', 'revision', 'serial']);

    const xa = new X509Certificate(ra.body.certificate);
    const xb = new X509Certificate(rb.body.certificate);
    const xs = new X509Certificate(shared.body.certificate);
    assert.equal(xa.subject, 'CN=/fleet/amr/driver', 'the subject is the enclave, not what the CSR said');
    assert.equal(xb.subject, 'CN=/fleet/amr/driver');
    assert.equal(xa.issuer, new X509Certificate(ks.ca).subject);
    assert.notEqual(xa.serialNumber, xb.serialNumber);
    assert.equal(ra.body.serial, xa.serialNumber.toLowerCase());
    assert.match(ra.body.serial, /^[0-9a-f]{32}$/, '16 random bytes');
    assert.ok(xa.checkPrivateKey(crypto.createPrivateKey(ca.keyPem)), "robot A's certificate is for robot A's key");
    assert.ok(xb.checkPrivateKey(crypto.createPrivateKey(cb.keyPem)));
    assert.ok(!xa.publicKey.equals(xb.publicKey));
    assert.ok(xa.verify(new X509Certificate(ks.ca).publicKey));
    assert.equal(xa.ca, false);
    // The profile of the shared enclave certificate: the same extensions, the same validity rule.
    const extensions = (pem: string) => {
      const file = path.join(work, `ext-${++n}.pem`);
      fs.writeFileSync(file, pem);
      const text = ok(['x509', '-in', file, '-noout', '-text']);
      return { ext: text.slice(text.indexOf('X509v3 extensions')).split('Signature Algorithm')[0]!.trim(), sig: /Signature Algorithm: (\S+)/.exec(text)![1] };
    };
    assert.deepEqual(extensions(ra.body.certificate), extensions(shared.body.certificate));
    assert.equal(xa.validFrom, xs.validFrom);
    assert.equal(xa.validTo, xs.validTo);
    for (const cert of [ra.body.certificate, rb.body.certificate]) {
      const v = verifyAt(ks.caFile, cert);
      assert.equal(v.status, 0, v.out);
    }

    // Each robot's bundle now carries its own certificate, its serial, and still no key.
    const ba = await bundleOf(ta);
    const ea = enclaveIn(ba, ks.name, '/fleet/amr/driver')!;
    assert.equal(ea.files['cert.pem'], ra.body.certificate);
    assert.equal(ea.identitySerial, ra.body.serial);
    assert.equal(ea.notAfter, new Date(xa.validTo).toISOString());
    assert.equal(ea.files['key.pem'], undefined);
    assert.equal(ba.revision, ra.body.revision);
    assert.notEqual(ba.revision, before.revision, 'a new identity is a new revision');
    assert.equal(enclaveIn(await bundleOf(tb), ks.name, '/fleet/amr/driver')!.files['cert.pem'], rb.body.certificate);

    // Audited with robot, enclave and serial; never key material.
    const audit = (await app().get('/v1/audit?action=identity.issue').set(A()).expect(200)).body.entries as Json[];
    const entry = audit.find((x) => x.details.serial === ra.body.serial)!;
    assert.equal(entry.actor, 'amr-a');
    assert.equal(entry.target, `${ks.name}:/fleet/amr/driver`);
    assert.doesNotMatch(JSON.stringify(audit), /BEGIN|PRIVATE|REQUEST/);
  });

  test('refusals: key reuse 409, unbound 404, bad signature or wrong curve 422, shared enclave 409', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves:batch`).set(A()).send({ paths: ['/r/one', '/r/two'] }).expect(201);
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/r/shared', identityMode: 'shared' }).expect(201);
    const t = await robot('refused-a');
    const t2 = await robot('refused-b');
    for (const [r, e] of [['refused-a', '/r/one'], ['refused-a', '/r/two'], ['refused-b', '/r/one'], ['refused-a', '/r/shared']]) {
      await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: e, robot: r }).expect(201);
    }
    const c = csr();
    assert.equal((await issue(t, ks.name, '/r/one', c.csrPem)).status, 201);
    for (const res of [await issue(t, ks.name, '/r/one', c.csrPem), await issue(t, ks.name, '/r/two', c.csrPem), await issue(t2, ks.name, '/r/one', c.csrPem)]) {
      assert.equal(res.status, 409, JSON.stringify(res.body));
      assert.equal(res.body.error.code, 'key-reused');
    }
    // Not bound (refused-b has no /r/two), unknown enclave, unknown keystore: the same 404.
    for (const res of [await issue(t2, ks.name, '/r/two', csr().csrPem), await issue(t, ks.name, '/r/none', csr().csrPem), await issue(t, 'nope', '/r/one', csr().csrPem)]) {
      assert.equal(res.status, 404, JSON.stringify(res.body));
    }
    // A signature that does not verify: one byte of the signature changed.
    const der = Buffer.from(csr().csrPem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');
    der[der.length - 5]! ^= 0x01;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    const badSig = await issue(t, ks.name, '/r/two', tampered);
    assert.equal(badSig.status, 422, JSON.stringify(badSig.body));
    assert.equal(badSig.body.error.code, 'invalid-csr');
    assert.match(badSig.body.error.message, /does not verify|malformed/);
    const p384 = await issue(t, ks.name, '/r/two', csr({ curve: 'P-384' }).csrPem);
    assert.equal(p384.status, 422);
    assert.match(p384.body.error.message, /P-256/);
    assert.equal((await issue(t, ks.name, '/r/two', 'not a csr')).status, 422);
    assert.equal((await issue(t, ks.name, '/r/two', `-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n`)).status, 422);
    const sharedRes = await issue(t, ks.name, '/r/shared', csr().csrPem);
    assert.equal(sharedRes.status, 409);
    assert.equal(sharedRes.body.error.code, 'identity-mode-shared');
    assert.equal((await app().post('/v1/robot/identity').send({ keystore: ks.name, enclave: '/r/one', csr: csr().csrPem })).status, 401);
    assert.equal((await app().post('/v1/robot/identity').set(bearer(t)).send({ keystore: ks.name, enclave: '/r/one', csr: 'x'.repeat(17 * 1024) })).status, 422);
  });

  test('rate limit per robot and enclave: 429 with Retry-After, refilled as the clock moves', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves:batch`).set(A()).send({ paths: ['/rl/a', '/rl/b'] }).expect(201);
    const t = await robot('limited', { rl: 'yes' });
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/rl/a', selector: { rl: 'yes' } }).expect(201);
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/rl/b', selector: { rl: 'yes' } }).expect(201);
    for (let i = 0; i < 3; i++) assert.equal((await issue(t, ks.name, '/rl/a', csr().csrPem)).status, 201, `burst ${i}`);
    const limited = await issue(t, ks.name, '/rl/a', csr().csrPem);
    assert.equal(limited.status, 429, JSON.stringify(limited.body));
    const wait = Number(limited.headers['retry-after']);
    assert.ok(Number.isInteger(wait) && wait >= 1 && wait <= 360, `Retry-After ${limited.headers['retry-after']}`);
    assert.equal((await issue(t, ks.name, '/rl/b', csr().csrPem)).status, 201, 'another enclave has its own budget');
    clock += wait * 1000;
    assert.equal((await issue(t, ks.name, '/rl/a', csr().csrPem)).status, 201, 'after Retry-After seconds one more is allowed');
    assert.equal((await issue(t, ks.name, '/rl/a', csr().csrPem)).status, 429);
  });

  test('rate limit under concurrency: requests of one robot at once get no more than the burst; a refused one costs nothing', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves:batch`).set(A()).send({ paths: ['/rc/a', '/rc/b'] }).expect(201);
    const t = await robot('racer', { rc: 'yes' });
    for (const e of ['/rc/a', '/rc/b']) await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: e, selector: { rc: 'yes' } }).expect(201);
    // Checking the budget and spending it are separated by waits on the store: five at once must not all pass.
    const csrs = Array.from({ length: 5 }, () => csr().csrPem);
    const burst = await Promise.all(csrs.map((c) => issue(t, ks.name, '/rc/a', c)));
    assert.deepEqual(burst.map((r) => r.status).sort(), [201, 201, 201, 429, 429], JSON.stringify(burst.map((r) => r.body)));
    const live = ((await app().get('/v1/robots/racer/identities').set(A()).expect(200)).body.identities as Json[]).filter((i) => i.enclave === '/rc/a');
    assert.equal(live.length, 3);
    assert.deepEqual(live.map((i) => i.status).filter((s) => s === 'live'), ['live'], 'one live certificate, the others revoked by their successor');
    // Refusals give the token back: one issued, three refused (a key certified before), then two more fit the burst.
    const c = csr().csrPem;
    assert.equal((await issue(t, ks.name, '/rc/b', c)).status, 201);
    for (let i = 0; i < 3; i++) assert.equal((await issue(t, ks.name, '/rc/b', c)).status, 409);
    for (let i = 0; i < 2; i++) assert.equal((await issue(t, ks.name, '/rc/b', csr().csrPem)).status, 201, `after refusals ${i}`);
    assert.equal((await issue(t, ks.name, '/rc/b', csr().csrPem)).status, 429);
  });

  test("re-issue revokes the previous serial in a batch per keystore; revoking one robot's identity touches only the CRL for others", async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/fleet/driver' }).expect(201);
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/fleet/driver', selector: { site: 'crl' } }).expect(201);
    const names = ['crl-a', 'crl-b', 'crl-c', 'crl-d'];
    const tokens = await Promise.all(names.map((r) => robot(r, { site: 'crl' })));
    const first = [] as Json[];
    for (const t of tokens) first.push((await issue(t, ks.name, '/fleet/driver', csr().csrPem).expect(201)).body);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), []);

    // A boot storm: robots a, b and c restart and ask again. Their old serials are recorded at once...
    const keystoreChanges: string[] = [];
    const stop = ctx.services.changes.subscribe((c) => c.kind === 'keystore' && keystoreChanges.push(c.keystore));
    const second = [] as Json[];
    for (const t of tokens.slice(0, 3)) second.push((await issue(t, ks.name, '/fleet/driver', csr().csrPem).expect(201)).body);
    const ids = (await app().get('/v1/robots/crl-a/identities').set(A()).expect(200)).body.identities as Json[];
    assert.deepEqual(ids.map((i) => [i.serial, i.status]), [[second[0]!.serial, 'live'], [first[0]!.serial, 'revoked']]);
    // ...and signed into the CRL together: one re-signing, one fleet-wide update, not one per robot.
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [], 'not signed per robot');
    assert.deepEqual(keystoreChanges, []);
    assert.equal(await ctx.services.crls.flush(ks.name), true);
    assert.equal(await ctx.services.crls.flush(ks.name), false, 'nothing left to sign');
    stop();
    assert.deepEqual(keystoreChanges, [ks.name]);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), first.slice(0, 3).map((f) => f.serial.toUpperCase()).sort());

    // An administrator revokes robot b's current identity: that serial alone joins the CRL, at once.
    const tb = tokens[1]!;
    const td = tokens[3]!;
    const beforeD = await bundleOf(td);
    const beforeA = await bundleOf(tokens[0]!);
    const revokedCrlBefore = await crlSerials(ks.name, ks.caFile);
    await app().delete(`/v1/robots/crl-b/identities/${ks.name}/${second[1]!.serial}`).set(A()).expect(204);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [...revokedCrlBefore, second[1]!.serial.toUpperCase()].sort());
    const crlText = ok(['crl', '-in', path.join(work, `${ks.name}.crl.pem`), '-noout', '-text']);
    assert.equal((crlText.match(/Serial Number:/g) ?? []).length, 4);
    // Other robots: the same certificate bytes, a new crl.pem, no other change.
    const afterD = await bundleOf(td);
    const ed0 = enclaveIn(beforeD, ks.name, '/fleet/driver')!;
    const ed1 = enclaveIn(afterD, ks.name, '/fleet/driver')!;
    assert.equal(ed1.files['cert.pem'], ed0.files['cert.pem']);
    assert.equal(ed1.identitySerial, first[3]!.serial);
    assert.notEqual(ed1.files['crl.pem'], ed0.files['crl.pem']);
    assert.deepEqual({ ...ed1.files, 'crl.pem': null }, { ...ed0.files, 'crl.pem': null });
    assert.equal(enclaveIn(await bundleOf(tokens[0]!), ks.name, '/fleet/driver')!.files['cert.pem'], enclaveIn(beforeA, ks.name, '/fleet/driver')!.files['cert.pem']);
    // Robot b: no certificate in its bundle any more; its own is refused with the new CRL, d's still verifies.
    const eb = enclaveIn(await bundleOf(tb), ks.name, '/fleet/driver')!;
    assert.equal(eb.files['cert.pem'], undefined);
    assert.equal(eb.identitySerial, undefined);
    const crlPem = (await storedCrl(ctx, ks.name)).crl_pem!;
    const refusedB = verifyAt(ks.caFile, second[1]!.certificate, crlPem);
    assert.notEqual(refusedB.status, 0);
    assert.match(refusedB.out, /certificate revoked/);
    const stillD = verifyAt(ks.caFile, first[3]!.certificate, crlPem);
    assert.equal(stillD.status, 0, stillD.out);
    // Shown on the robot's page and audited.
    const page = (await app().get('/v1/robots/crl-b').set(A()).expect(200)).body;
    assert.deepEqual(page.identities.map((i: Json) => i.status), ['revoked', 'revoked']);
    const audit = (await app().get('/v1/audit?action=identity.revoke').set(A()).expect(200)).body.entries as Json[];
    assert.deepEqual(audit[0]!.details, { robot: 'crl-b', serial: second[1]!.serial });
    assert.equal((await app().delete(`/v1/robots/crl-b/identities/${ks.name}/${second[1]!.serial}`).set(A())).status, 409);
    assert.equal((await app().delete(`/v1/robots/crl-a/identities/${ks.name}/${second[1]!.serial}`).set(A())).status, 404, "another robot's serial");
    // Robot b asks again with a new key and is back.
    assert.equal((await issue(tb, ks.name, '/fleet/driver', csr().csrPem)).status, 201);
  });

  test('deleting a robot or revoking its device key revokes its live serials', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves:batch`).set(A()).send({ paths: ['/gone/one', '/gone/two'] }).expect(201);
    for (const e of ['/gone/one', '/gone/two']) await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: e, selector: { gone: 'yes' } }).expect(201);
    const td = await robot('to-delete', { gone: 'yes' });
    const tk = await robot('key-revoked', { gone: 'yes' });
    const tstay = await robot('stays', { gone: 'yes' });
    const serials: Record<string, string[]> = { 'to-delete': [], 'key-revoked': [], stays: [] };
    for (const [name, t] of [['to-delete', td], ['key-revoked', tk], ['stays', tstay]] as const) {
      for (const e of ['/gone/one', '/gone/two']) serials[name]!.push((await issue(t, ks.name, e, csr().csrPem).expect(201)).body.serial);
    }
    await app().delete('/v1/robots/to-delete').set(A()).expect(204);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), serials['to-delete']!.map((s) => s.toUpperCase()).sort());
    await app().post('/v1/robots/key-revoked/revoke-key').set(A()).expect(200);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [...serials['to-delete']!, ...serials['key-revoked']!].map((s) => s.toUpperCase()).sort());
    const ids = (await app().get('/v1/robots/key-revoked/identities').set(A()).expect(200)).body.identities as Json[];
    assert.deepEqual(ids.map((i) => i.status), ['revoked', 'revoked']);
    assert.deepEqual(((await app().get('/v1/robots/stays/identities').set(A()).expect(200)).body.identities as Json[]).map((i) => i.status), ['live', 'live']);
    const audit = (await app().get('/v1/audit?action=robot.delete').set(A()).expect(200)).body.entries as Json[];
    assert.deepEqual([...audit[0]!.details.revokedSerials].sort(), [...serials['to-delete']!].sort());
  });

  test('--identity-reissue expire: the previous certificate is superseded, not revoked', async () => {
    const other = await makeTestApp({ now: () => new Date(clock), identityReissue: 'expire', crlBatchMs: 3_600_000 });
    try {
      const oa = bearer(await other.adminToken());
      await request(other.app).post('/v1/keystores').set(oa).send({ name: 'exp', identityMode: 'per-robot' }).expect(201);
      await request(other.app).post('/v1/keystores/exp/enclaves').set(oa).send({ path: '/e' }).expect(201);
      const t = await enrolledRobot(other, 'r1', atClock());
      await request(other.app).post('/v1/bindings').set(oa).send({ keystore: 'exp', enclave: '/e', robot: 'r1' }).expect(201);
      const one = (await request(other.app).post('/v1/robot/identity').set(bearer(t)).send({ keystore: 'exp', enclave: '/e', csr: csr().csrPem }).expect(201)).body;
      const two = (await request(other.app).post('/v1/robot/identity').set(bearer(t)).send({ keystore: 'exp', enclave: '/e', csr: csr().csrPem }).expect(201)).body;
      const ids = (await request(other.app).get('/v1/robots/r1/identities').set(oa).expect(200)).body.identities as Json[];
      assert.deepEqual(ids.map((i) => [i.serial, i.status]), [[two.serial, 'live'], [one.serial, 'superseded']]);
      assert.equal(await other.services.crls.flush('exp'), false);
      assert.equal((await storedCrl(other, 'exp')).crl_pem, null);
    } finally {
      await other.services.crls.close();
      other.services.bundles.close();
      await other.close();
    }
  });

  test('export of a per-robot keystore: CA material, permissions, governance, no robot keys; import still works', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/ex/own' }).expect(201);
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/ex/shared', identityMode: 'shared' }).expect(201);
    const t = await robot('exporter');
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/ex/own', robot: 'exporter' }).expect(201);
    await issue(t, ks.name, '/ex/own', csr().csrPem).expect(201);
    const res = await app().get(`/v1/keystores/${ks.name}/export`).set(A()).buffer(true).parse(binaryParser).expect(200);
    const dir = path.join(work, `export-${ks.name}`);
    untar(res.body as Buffer, dir);
    const own = path.join(dir, 'keystore', 'enclaves', 'ex', 'own');
    assert.deepEqual(fs.readdirSync(own).sort(), ['governance.p7s', 'identity_ca.cert.pem', 'permissions.p7s', 'permissions.xml', 'permissions_ca.cert.pem']);
    assert.ok(fs.existsSync(path.join(dir, 'keystore', 'enclaves', 'ex', 'shared', 'key.pem')), 'a shared enclave still has its key');
    assert.ok(fs.existsSync(path.join(dir, 'keystore', 'public', 'ca.cert.pem')));
    assert.ok(fs.existsSync(path.join(dir, 'keystore', 'enclaves', 'governance.p7s')));
    const signed = openssl(['smime', '-verify', '-in', path.join(own, 'permissions.p7s'), '-CAfile', path.join(own, 'permissions_ca.cert.pem'), '-purpose', 'any', '-attime', String(Math.floor(new Date(new X509Certificate(ks.ca).validFrom).getTime() / 1000) + 7200)]);
    assert.equal(signed.status, 0, signed.out);
    assert.match(signed.stdout, /subject_name>CN=\/ex\/own</);
    const imported = await app().post(`/v1/keystores/${ks.name}_copy/import`).set(A()).type('application/gzip').send(res.body as Buffer);
    assert.equal(imported.status, 201, JSON.stringify(imported.body));
    assert.equal(imported.body.enclaves, 2);
    assert.equal(imported.body.identityMode, 'shared', 'it has a shared enclave');
    const copied = (await app().get(`/v1/keystores/${ks.name}_copy/enclaves`).set(A()).expect(200)).body.enclaves as Json[];
    assert.deepEqual(copied.map((e) => [e.path, e.identityMode]), [['/ex/own', 'per-robot'], ['/ex/shared', 'shared']]);

    // Per-robot enclaves only, with the CA keys: imported as a per-robot keystore that issues to its robots.
    await app().delete(`/v1/keystores/${ks.name}/enclaves/ex/shared`).set(A()).expect(204);
    const full = await app().get(`/v1/keystores/${ks.name}/export?private=true`).set(A()).buffer(true).parse(binaryParser).expect(200);
    const again = await app().post(`/v1/keystores/${ks.name}_moved/import`).set(A()).type('application/gzip').send(full.body as Buffer);
    assert.equal(again.status, 201, JSON.stringify(again.body));
    assert.equal(again.body.identityMode, 'per-robot');
    const moved = (await app().get(`/v1/keystores/${ks.name}_moved/enclaves/ex/own`).set(A()).expect(200)).body;
    const original = (await app().get(`/v1/keystores/${ks.name}/enclaves/ex/own`).set(A()).expect(200)).body;
    assert.equal(moved.notAfter, original.notAfter, "the enclave's window comes from its permissions");
    assert.equal(moved.permissionsXml, original.permissionsXml);
    await app().post('/v1/bindings').set(A()).send({ keystore: `${ks.name}_moved`, enclave: '/ex/own', robot: 'exporter' }).expect(201);
    const cert = (await issue(t, `${ks.name}_moved`, '/ex/own', csr().csrPem).expect(201)).body.certificate as string;
    const v = verifyAt(ks.caFile, cert);
    assert.equal(v.status, 0, `the same CA: ${v.out}`);
  });

  test('switching modes: shared → per-robot drops the shared key and revokes its serial; back issues a new one and revokes the robots\' serials', async () => {
    const ks = await keystore();
    const created = await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/sw/driver' }).expect(201);
    const t = await robot('switcher');
    await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave: '/sw/driver', robot: 'switcher' }).expect(201);
    const shared = enclaveIn(await bundleOf(t), ks.name, '/sw/driver')!;
    assert.equal(shared.identity, undefined);
    assert.match(shared.files['key.pem'], /PRIVATE KEY/);

    const toOwn = await app().patch(`/v1/keystores/${ks.name}/enclaves/sw/driver`).set(A()).send({ identityMode: 'per-robot' }).expect(200);
    assert.equal(toOwn.body.identityMode, 'per-robot');
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [created.body.serial]);
    const own = enclaveIn(await bundleOf(t), ks.name, '/sw/driver')!;
    assert.equal(own.identity, 'per-robot');
    assert.equal(own.files['key.pem'], undefined);
    assert.equal(own.files['cert.pem'], undefined);
    assert.equal(own.files['permissions.p7s'], shared.files['permissions.p7s'], 'the same signed permissions serve every robot');
    assert.equal((await ctx.store.read((r) => r.keystores.getEnclave(ks.name, '/sw/driver')))!.key_sealed, '');
    const mine = (await issue(t, ks.name, '/sw/driver', csr().csrPem).expect(201)).body;

    const back = await app().patch(`/v1/keystores/${ks.name}/enclaves/sw/driver`).set(A()).send({ identityMode: 'shared' }).expect(200);
    assert.equal(back.body.identityMode, 'shared');
    assert.notEqual(back.body.serial, created.body.serial);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [created.body.serial, mine.serial.toUpperCase()].sort());
    const again = enclaveIn(await bundleOf(t), ks.name, '/sw/driver')!;
    assert.equal(again.files['cert.pem'], back.body.certificate);
    assert.match(again.files['key.pem'], /PRIVATE KEY/);
    assert.notEqual(again.files['key.pem'], shared.files['key.pem']);
    const audit = (await app().get('/v1/audit?action=enclave.identity-mode').set(A()).expect(200)).body.entries as Json[];
    assert.deepEqual(audit.map((a) => [a.details.from, a.details.identityMode]), [['per-robot', 'shared'], ['shared', 'per-robot']]);
    assert.doesNotMatch(JSON.stringify(audit), /PRIVATE/);
  });

  test('--identity-validity-days: a robot certificate lives that many days from its issue, never past the enclave', async () => {
    const short = await makeTestApp({ now: () => new Date(clock), identityValidityDays: 3 });
    try {
      const sa = bearer(await short.adminToken());
      const api = () => request(short.app);
      await api().post('/v1/keystores').set(sa).send({ name: 'life', identityMode: 'per-robot' }).expect(201);
      await api().post('/v1/keystores/life/enclaves').set(sa).send({ path: '/life/long', validityDays: 365 }).expect(201);
      await api().post('/v1/keystores/life/enclaves').set(sa).send({ path: '/life/brief', validityDays: 1 }).expect(201);
      await api().post('/v1/robots').set(sa).send({ name: 'lifer' }).expect(201);
      const t = await api().post('/v1/robots/lifer/enrollment-tokens').set(sa).send({}).expect(201);
      const key = deviceKey();
      await api().post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
      const token = (await api().post('/v1/auth/robot').send({ assertion: assertion('lifer', key, atClock()) }).expect(200)).body.token as string;
      for (const e of ['/life/long', '/life/brief']) await api().post('/v1/bindings').set(sa).send({ keystore: 'life', enclave: e, robot: 'lifer' }).expect(201);
      const get = async (enclave: string) => {
        const res = await api().post('/v1/robot/identity').set(bearer(token)).send({ keystore: 'life', enclave, csr: csr().csrPem });
        assert.equal(res.status, 201, JSON.stringify(res.body));
        return new X509Certificate(res.body.certificate as string);
      };
      const day = 86_400_000;
      const long = await get('/life/long');
      assert.equal(Date.parse(long.validTo), Math.floor((clock + 3 * day) / 1000) * 1000, 'three days from the issue');
      assert.ok(Date.parse(long.validFrom) <= clock && Date.parse(long.validFrom) > clock - day, 'from about now (backdated), not from the enclave');
      const enclaveEnd = Date.parse((await api().get('/v1/keystores/life/enclaves/life/brief').set(sa).expect(200)).body.notAfter);
      assert.equal(Date.parse((await get('/life/brief')).validTo), enclaveEnd, 'never past the enclave');
      const caFile = path.join(work, 'life.ca.pem');
      fs.writeFileSync(caFile, (await api().get('/v1/keystores/life').set(sa).expect(200)).body.identityCa.certificate);
      const at = (ms: number) => openssl(['verify', '-attime', String(Math.floor(ms / 1000)), '-CAfile', caFile, writeTemp(long.toString())]);
      assert.equal(at(clock + 2 * day).status, 0, 'valid inside its three days');
      assert.notEqual(at(clock + 4 * day).status, 0, 'expired after them');
    } finally {
      await short.services.crls.close();
      short.services.bundles.close();
      await short.close();
    }
  });

  const writeTemp = (pem: string) => {
    const file = path.join(work, `pem-${++n}.pem`);
    fs.writeFileSync(file, pem);
    return file;
  };

  // Last in this suite: it moves the test's clock days ahead.
  test('a serial leaves the CRL a week after its certificate expired; until then it stays', async () => {
    const ks = await keystore('per-robot');
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/exp/short', validityDays: 1 }).expect(201);
    await app().post(`/v1/keystores/${ks.name}/enclaves`).set(A()).send({ path: '/exp/long', validityDays: 60 }).expect(201);
    const day = 24 * 3600 * 1000;
    const issued = async (name: string, enclave: string) => {
      const token = await robot(name);
      await app().post('/v1/bindings').set(A()).send({ keystore: ks.name, enclave, robot: name }).expect(201);
      const res = await issue(token, ks.name, enclave, csr().csrPem);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body as Json;
    };
    const revoke = (name: string, serial: string) => app().delete(`/v1/robots/${name}/identities/${ks.name}/${serial}`).set(A()).expect(204);
    const short = await issued('exp-a', '/exp/short');
    const long1 = await issued('exp-c', '/exp/long');
    await revoke('exp-a', short.serial);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [short.serial.toUpperCase()]);
    // One day after the short certificate expired: still listed (a lagging peer clock is covered).
    const shortEnd = new Date(short.notAfter).getTime();
    clock = shortEnd + day;
    admin = await ctx.adminToken();
    await revoke('exp-c', long1.serial);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [short.serial, long1.serial].map((x: string) => x.toUpperCase()).sort());
    // Eight days after: the next re-signing leaves it out; the unexpired ones stay.
    const long2 = await issued('exp-d', '/exp/long');
    clock = shortEnd + 8 * day;
    admin = await ctx.adminToken();
    await revoke('exp-d', long2.serial);
    assert.deepEqual((await crlSerials(ks.name, ks.caFile)), [long1.serial, long2.serial].map((x: string) => x.toUpperCase()).sort());
    // The CRL is still what openssl accepts from that CA, and still refuses a listed certificate.
    const crlPem = (await storedCrl(ctx, ks.name)).crl_pem!;
    const refused = verifyAt(ks.caFile, long2.certificate, crlPem);
    assert.notEqual(refused.status, 0);
    assert.match(refused.out, /certificate revoked/);
  });
});

describe('CRL batches on their own: the timer, and a stop in the middle of a batch', () => {
  /** A per-robot keystore `b` with enclave /e bound to an enrolled robot `r`, re-issued once: one revocation batched. */
  async function reissued(ctx: TestContext): Promise<{ first: Json; second: Json }> {
    const a = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'b', identityMode: 'per-robot' }).expect(201);
    await request(ctx.app).post('/v1/keystores/b/enclaves').set(a).send({ path: '/e' }).expect(201);
    const t = await enrolledRobot(ctx, 'r');
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'b', enclave: '/e', robot: 'r' }).expect(201);
    const issue = async () =>
      (await request(ctx.app).post('/v1/robot/identity').set(bearer(t)).send({ keystore: 'b', enclave: '/e', csr: buildCsr(newIdentityKey().privateKey, '/e') }).expect(201)).body as Json;
    const first = await issue();
    return { first, second: await issue() };
  }
  const revokedIn = async (ctx: TestContext): Promise<{ pending: number; serials: string[] }> => {
    const ks = (await ctx.store.read((r) => r.keystores.get('b')))!;
    return { pending: ks.crl_pending, serials: ks.crl_pem ? [...readCrl(ks.crl_pem, ks.identity_ca_cert).revokedSerials] : [] };
  };

  test("the batch timer signs the revocation and tells the keystore's robots", async () => {
    const ctx = await makeTestApp({ crlBatchMs: 20 });
    try {
      // Waited for as an event (the flush publishes the keystore's change), never by sleeping. The batch timer
      // does not keep a process alive (a server's socket does): the guard, which fails the test, does here.
      let guard: NodeJS.Timeout | undefined;
      const signed = new Promise<void>((resolve, reject) => {
        guard = setTimeout(() => reject(new Error('the batch was not signed within 30 s')), 30_000);
        const stop = ctx.services.changes.subscribe((c) => {
          if (c.kind === 'keystore' && c.keystore === 'b') {
            stop();
            resolve();
          }
        });
      });
      const { first, second } = await reissued(ctx);
      await signed.finally(() => clearTimeout(guard));
      assert.deepEqual(await revokedIn(ctx), { pending: 0, serials: [first.serial.toUpperCase()] });
      assert.ok(!(await revokedIn(ctx)).serials.includes(second.serial.toUpperCase()));
    } finally {
      await ctx.services.crls.close();
      ctx.services.bundles.close();
      await ctx.close();
    }
  });

  test('a batch left pending by a stop is signed when the next app starts on the same store', async () => {
    const ctx = await makeTestApp({ crlBatchMs: 3_600_000 });
    let next: Express | undefined;
    try {
      const { first } = await reissued(ctx);
      // The stop: no timer will sign it; the mark stays in the database.
      await ctx.services.crls.close();
      assert.deepEqual(await revokedIn(ctx), { pending: 1, serials: [] });
      next = await createApp({ store: ctx.store, logger: createLogger('silent'), sealer: ctx.sealer, jwtSecret: ctx.jwtSecret, options: { crlBatchMs: 3_600_000 } });
      assert.deepEqual(await revokedIn(ctx), { pending: 0, serials: [first.serial.toUpperCase()] });
    } finally {
      if (next) {
        await servicesOf(next).crls.close();
        servicesOf(next).bundles.close();
        await servicesOf(next).sandbox.close();
      }
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

describe('enclavectl: identity modes, identities on robot show, revoke-identity (real server)', () => {
  const root = tempDir('enclavectl-identities-');
  const dataDir = path.join(root, 'data');
  const home = path.join(root, 'home');
  const caFile = path.join(dataDir, 'tls', 'ca.cert.pem');
  const ADMIN_PW = 'admin-password-for-identities';
  let server: ServerProcess;
  const run = (...args: string[]) => ctl(args, { home, env: { ENCLAVECTL_PASSWORD: ADMIN_PW } });
  const okRun = (r: CtlResult): string => {
    assert.equal(r.status, 0, describeRun(r));
    return r.stdout;
  };
  before(async () => {
    server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD: ADMIN_PW });
    okRun(await run('login', '--server', server.url, '--ca', caFile, '--user', 'admin'));
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('create, show, list, set-mode, robot show, revoke-identity', async () => {
    const created = okRun(await run('keystore', 'create', 'own', '--identity-mode', 'per-robot'));
    assert.match(created, /^identities: +per-robot \(each robot makes its own key and gets its own certificate\)$/m);
    assert.match(okRun(await run('keystore', 'list')), /^own +0 +shared +generated +issuing +per-robot +0 /m);
    const enclaves = okRun(await run('enclave', 'create', 'own', '/fleet/driver', '/fleet/ref'));
    assert.match(enclaves, /^\/fleet\/driver +active +\(per robot\) /m);
    assert.match(okRun(await run('enclave', 'show', 'own', '/fleet/driver')), /^identity: +per-robot/m);
    const noCert = await run('enclave', 'show', 'own', '/fleet/driver', '--cert');
    assert.equal(noCert.status, 1, describeRun(noCert));
    assert.match(noCert.stderr, /is per-robot: each robot has its own certificate/);
    const bad = await run('enclave', 'create', 'own', '/fleet/x', '--identity-mode', 'mine');
    assert.equal(bad.status, 2, describeRun(bad));
    assert.match(bad.stderr, /expected shared or per-robot/);
    const refused = await run('enclave', 'set-mode', 'own', '/fleet/ref', 'shared');
    assert.equal(refused.status, 2, describeRun(refused));
    assert.match(refused.stderr, /add --yes to confirm/);
    assert.match(okRun(await run('enclave', 'set-mode', 'own', '/fleet/ref', 'shared', '--yes')), /^own:\/fleet\/ref identity: shared/m);

    // A robot gets a certificate over HTTPS, as its agent would.
    okRun(await run('robot', 'create', 'r1'));
    const token = okRun(await run('robot', 'token', 'r1')).trim();
    okRun(await run('bind', 'own', '/fleet/driver', '--robot', 'r1'));
    const ca = fs.readFileSync(caFile, 'utf8');
    const key = deviceKey();
    assert.equal((await pinnedRequest(`${server.url}/v1/enroll`, ca, { method: 'POST', body: { token, publicKey: key.publicKeyPem } })).status, 201);
    const login = await pinnedRequest(`${server.url}/v1/auth/robot`, ca, { method: 'POST', body: { assertion: assertion('r1', key) } });
    assert.equal(login.status, 200);
    const keyFile = path.join(root, 'k.pem');
    ok(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile]);
    const csrPem = ok(['req', '-new', '-key', keyFile, '-subj', '/CN=r1']);
    const issued = await pinnedRequest(`${server.url}/v1/robot/identity`, ca, { method: 'POST', token: login.body.token, body: { keystore: 'own', enclave: '/fleet/driver', csr: csrPem } });
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const serial = issued.body.serial as string;

    const show = okRun(await run('robot', 'show', 'r1'));
    assert.match(show, /^per-robot identities:\nKEYSTORE +ENCLAVE +SERIAL +NOT AFTER +STATUS\nown +\/fleet\/driver +[0-9a-f]{32} +\S+ \S+ +live$/m);
    assert.ok(show.includes(serial));
    const revoke = await run('robot', 'revoke-identity', 'r1', 'own', serial);
    assert.equal(revoke.status, 2, 'asks for --yes off a terminal');
    assert.equal(okRun(await run('robot', 'revoke-identity', 'r1', 'own', serial, '--yes')), `revoked certificate ${serial} of robot r1 (own); other robots keep theirs\n`);
    assert.match(okRun(await run('robot', 'show', 'r1')), new RegExp(`^own +/fleet/driver +${serial} +\\S+ \\S+ +revoked$`, 'm'));
    const again = await run('robot', 'revoke-identity', 'r1', 'own', serial, '--yes');
    assert.equal(again.status, 1, describeRun(again));
    assert.match(again.stderr, /revoked already/);
  });
});

test('--identity-reissue / ENCLAVE_IDENTITY_REISSUE: revoke by default, expire on request, anything else refused', () => {
  assert.equal(parseCommandLine([], {}).config.identityReissue, 'revoke');
  assert.equal(parseCommandLine(['--identity-reissue', 'expire'], {}).config.identityReissue, 'expire');
  assert.equal(parseCommandLine([], { ENCLAVE_IDENTITY_REISSUE: 'expire' }).config.identityReissue, 'expire');
  assert.equal(parseCommandLine(['--identity-reissue', 'revoke'], { ENCLAVE_IDENTITY_REISSUE: 'expire' }).config.identityReissue, 'revoke', 'the flag wins');
  assert.throws(() => parseCommandLine(['--identity-reissue', 'never'], {}), (e: unknown) => e instanceof ConfigError && /--identity-reissue/.test((e as Error).message));
});

test('--identity-validity-days / ENCLAVE_IDENTITY_VALIDITY_DAYS: 0 (the enclave\'s) by default, a positive number of days, nothing else', () => {
  assert.equal(parseCommandLine([], {}).config.identityValidityDays, 0);
  assert.equal(parseCommandLine(['--identity-validity-days', '7'], {}).config.identityValidityDays, 7);
  assert.equal(parseCommandLine([], { ENCLAVE_IDENTITY_VALIDITY_DAYS: '30' }).config.identityValidityDays, 30);
  for (const bad of ['-1', '1.5', 'week']) {
    assert.throws(() => parseCommandLine(['--identity-validity-days', bad], {}), (e: unknown) => e instanceof ConfigError && /--identity-validity-days/.test((e as Error).message));
  }
});

/**
 * Real peers (Cyclone DDS 0.10, tools/dds-check): robots A and B hold their own keys and certificates for one
 * per-robot enclave and authenticate each other; robot C's certificate is revoked, and a peer started with the
 * keystore's current crl.pem refuses it (Cyclone's Security/Authentication/CRL does enforce it).
 */
describe('per-robot identities with a real DDS-Security peer', { skip: ddsUnavailable() ?? false }, () => {
  let ctx: TestContext;
  const folders = new Map<string, string>();
  const serials = new Map<string, string>();
  before(async () => {
    ctx = await makeTestApp({ crlBatchMs: 3_600_000 });
    const a = bearer(await ctx.adminToken());
    await request(ctx.app).post('/v1/keystores').set(a).send({ name: 'dds', identityMode: 'per-robot' }).expect(201);
    await request(ctx.app).post('/v1/keystores/dds/enclaves').set(a).send({ path: '/fleet/amr/driver' }).expect(201);
    await request(ctx.app).post('/v1/bindings').set(a).send({ keystore: 'dds', enclave: '/fleet/amr/driver', selector: { fleet: 'amr' } }).expect(201);
    for (const name of ['robot-a', 'robot-b', 'robot-c']) {
      await request(ctx.app).post('/v1/robots').set(a).send({ name, labels: { fleet: 'amr' } }).expect(201);
      const t = await request(ctx.app).post(`/v1/robots/${name}/enrollment-tokens`).set(a).send({}).expect(201);
      ctx.secrets.add(t.body.token);
      const device = deviceKey();
      await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: device.publicKeyPem }).expect(201);
      const token = (await request(ctx.app).post('/v1/auth/robot').send({ assertion: assertion(name, device) }).expect(200)).body.token as string;
      ctx.secrets.add(token);
      // The robot's own key, made by openssl, as its agent makes one in RAM; only the CSR leaves.
      const dir = path.join(ctx.dir, name);
      fs.mkdirSync(dir, { mode: 0o700 });
      const keyFile = path.join(dir, 'key.pem');
      assert.equal(openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyFile]).status, 0);
      const req = openssl(['req', '-new', '-key', keyFile, '-subj', `/CN=${name}`]);
      const issued = await request(ctx.app).post('/v1/robot/identity').set(bearer(token)).send({ keystore: 'dds', enclave: '/fleet/amr/driver', csr: req.stdout }).expect(201);
      serials.set(name, issued.body.serial);
      const bundle = (await request(ctx.app).get('/v1/robot/bundle').set(bearer(token)).expect(200)).body as Json;
      const files = enclaveIn(bundle, 'dds', '/fleet/amr/driver')!.files as Record<string, string>;
      assert.equal(files['key.pem'], undefined);
      folders.set(name, writeEnclave(dir, files));
    }
    await request(ctx.app).delete(`/v1/robots/robot-c/identities/dds/${serials.get('robot-c')}`).set(a).expect(204);
    const crl = (await storedCrl(ctx, 'dds')).crl_pem!;
    // Robot B's agent would now hold the keystore's new crl.pem (its bundle changed only there).
    fs.writeFileSync(path.join(folders.get('robot-b')!, 'crl.pem'), crl, { mode: 0o600 });
  });
  after(async () => {
    await ctx.services.crls.close();
    ctx.services.bundles.close();
    await ctx.close();
  });

  test("robot A and robot B: different certificates, same subject, one CA: they authenticate and exchange encrypted data", () => {
    assert.notEqual(serials.get('robot-a'), serials.get('robot-b'));
    const r = ddsPairCheck(folders.get('robot-a')!, folders.get('robot-b')!);
    assert.equal(r.status, 0, r.out);
  });

  test("robot C's revoked certificate is refused by a peer started with the current crl.pem (and only because of it)", () => {
    const r = ddsPairCheck(folders.get('robot-c')!, folders.get('robot-b')!);
    assert.notEqual(r.status, 0, r.out);
    assert.match(r.out, /certificate revoked/);
    // The control: the same certificate with a peer that has no CRL (robot A's folder predates the revocation).
    const control = ddsPairCheck(folders.get('robot-c')!, folders.get('robot-a')!);
    assert.equal(control.status, 0, control.out);
  });
});
