import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';
import { openssl, untar } from './helpers/tools.js';

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
  after(() => {
    ctx.services.crls.close();
    ctx.services.bundles.close();
    ctx.close();
  });

  /** A P-256 key and a CSR for it, both made by openssl (`req -new`), with a subject the server must ignore. */
  function csr(opts: { curve?: string; subject?: string } = {}): { keyFile: string; keyPem: string; csrPem: string } {
    const dir = fs.mkdtempSync(path.join(work, 'csr-'));
    const keyFile = path.join(dir, 'key.pem');
    ok(['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${opts.curve ?? 'P-256'}`, '-out', keyFile]);
    ok(['req', '-new', '-key', keyFile, '-subj', opts.subject ?? '/CN=whatever-the-robot-says/O=ignored', '-out', path.join(dir, 'csr.pem')]);
    return { keyFile, keyPem: fs.readFileSync(keyFile, 'utf8'), csrPem: fs.readFileSync(path.join(dir, 'csr.pem'), 'utf8') };
  }

  async function robot(name: string, labels: Record<string, string> = {}): Promise<string> {
    await app().post('/v1/robots').set(A()).send({ name, labels }).expect(201);
    const t = await app().post(`/v1/robots/${name}/enrollment-tokens`).set(A()).send({}).expect(201);
    ctx.secrets.add(t.body.token);
    const key: DeviceKey = deviceKey();
    await app().post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
    const login = await app().post('/v1/auth/robot').send({ assertion: assertion(name, key) }).expect(200);
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
  function crlSerials(keystore: string, caFile: string): string[] {
    const row = ctx.db.prepare('SELECT crl_pem FROM keystores WHERE name = ?').get(keystore) as { crl_pem: string | null };
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
    const stored = ctx.db.prepare('SELECT key_sealed, cert_pem FROM enclaves WHERE keystore = ? AND path = ?').get(ks.name, '/fleet/driver') as Json;
    assert.deepEqual(stored, { key_sealed: '', cert_pem: '' });
    assert.throws(() => ctx.db.prepare("UPDATE enclaves SET key_sealed = 'x' WHERE keystore = ? AND path = ?").run(ks.name, '/fleet/driver'), /no server-side key/);
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
});
