import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { FIXTURES, openssl, untar } from './helpers/tools.js';
import type { KeystoreRow } from '../server/keystores/keystores.repo.js';

const binaryParser = (res: request.Response, cb: (err: Error | null, body: Buffer) => void) => {
  const stream = res as unknown as NodeJS.ReadableStream;
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('end', () => cb(null, Buffer.concat(chunks)));
};

const keystoreRow = async (ctx: TestContext, name: string): Promise<KeystoreRow> => (await ctx.store.read((r) => r.keystores.get(name)))!;
const count = async (ctx: TestContext, sql: string): Promise<number> => Number((await ctx.store.read((r) => r.sql.get<{ n: number | string }>(sql)))!.n);

/**
 * Every byte the store holds: SQLite's file and its write-ahead log; on PostgreSQL (no file of ours), every
 * row of every table as text.
 */
async function storedBytes(ctx: TestContext): Promise<Buffer> {
  if (ctx.store.dialect === 'sqlite') {
    const file = path.join(ctx.dir, 'enclaves.db');
    return Buffer.concat([fs.readFileSync(file), fs.existsSync(`${file}-wal`) ? fs.readFileSync(`${file}-wal`) : Buffer.alloc(0)]);
  }
  return ctx.store.read(async (r) => {
    const tables = await r.sql.all<{ name: string }>("SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name");
    const parts: string[] = [];
    for (const { name } of tables) {
      const row = await r.sql.get<{ text: string | null }>(`SELECT string_agg(t::text, E'\\n') AS text FROM "${name}" t`);
      parts.push(row?.text ?? '');
    }
    return Buffer.from(parts.join('\n'));
  });
}

describe('keystores and enclaves as sros2 makes them', () => {
  let ctx: TestContext;
  let admin: string;
  let work: string;
  before(async () => {
    ctx = await makeTestApp();
    admin = await ctx.adminToken();
    work = path.join(ctx.dir, 'work');
    fs.mkdirSync(work);
  });
  after(async () => {
    ctx.services.bundles.close();
    await ctx.close();
  });

  const exportTo = async (ks: string, dir: string, priv = false) => {
    const res = await request(ctx.app).get(`/v1/keystores/${ks}/export${priv ? '?private=true' : ''}`).set(bearer(admin)).buffer(true).parse(binaryParser);
    assert.equal(res.status, 200, String(res.body));
    assert.equal(res.headers['content-type'], 'application/gzip');
    untar(res.body as Buffer, dir);
    return { root: path.join(dir, 'keystore'), archive: res.body as Buffer };
  };

  test('a generated keystore has sros2 CA and governance', async () => {
    const res = await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'site_a', domainId: 7 });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.sharedCa, true);
    assert.equal(res.body.importOnly, false);
    assert.equal(res.body.identityCa.subject, 'CN=sros2CA');
    assert.equal(res.body.domainId, 7);
    const ca = path.join(work, 'ca.pem');
    fs.writeFileSync(ca, res.body.identityCa.certificate);
    const text = openssl(['x509', '-in', ca, '-noout', '-text']).out;
    assert.match(text, /Version: 3/);
    assert.match(text, /ecdsa-with-SHA256/);
    assert.match(text, /Issuer: CN ?= ?sros2CA/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:1/);
    assert.equal((text.match(/X509v3 /g) ?? []).length, 2, 'one extension only (plus the "X509v3 extensions" header)');
    assert.match(text, /ASN1 OID: prime256v1/);
    assert.equal(openssl(['verify', '-CAfile', ca, ca]).status, 0);
    const nb = Date.parse(res.body.identityCa.notBefore);
    assert.ok(Date.now() - nb >= 3590_000 && Date.now() - nb < 3700_000, 'back-dated one hour by default');
  });

  test('enclaves: certificate verifies, key matches, .p7s verify with openssl, sros2 layout in the export', async () => {
    const res = await request(ctx.app).post('/v1/keystores/site_a/enclaves').set(bearer(admin)).send({ path: '/talker_listener/talker' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.subject, 'CN=/talker_listener/talker');
    assert.equal(res.body.permissionsSource, 'default');
    const { root } = await exportTo('site_a', path.join(work, 'exp1'));
    const e = path.join(root, 'enclaves', 'talker_listener', 'talker');
    assert.deepEqual(fs.readdirSync(e).sort(), ['cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions.xml', 'permissions_ca.cert.pem']);
    for (const link of ['identity_ca.cert.pem', 'permissions_ca.cert.pem', 'governance.p7s']) assert.ok(fs.lstatSync(path.join(e, link)).isSymbolicLink(), link);
    assert.equal(fs.readlinkSync(path.join(e, 'identity_ca.cert.pem')), '../../../public/identity_ca.cert.pem');
    assert.equal(fs.readlinkSync(path.join(e, 'governance.p7s')), '../../governance.p7s');
    assert.ok(!fs.existsSync(path.join(root, 'private', 'ca.key.pem')), 'no CA key without private=true');

    const verify = openssl(['verify', '-CAfile', path.join(e, 'identity_ca.cert.pem'), path.join(e, 'cert.pem')]);
    assert.equal(verify.status, 0, verify.out);
    const certText = openssl(['x509', '-in', path.join(e, 'cert.pem'), '-noout', '-text']).out;
    assert.match(certText, /Subject: CN ?= ?\/talker_listener\/talker/);
    assert.match(certText, /X509v3 Basic Constraints: \n\s+CA:FALSE/);
    assert.doesNotMatch(certText, /critical/);
    const pubFromKey = openssl(['pkey', '-in', path.join(e, 'key.pem'), '-pubout']).out;
    const pubFromCert = openssl(['x509', '-in', path.join(e, 'cert.pem'), '-noout', '-pubkey']).out;
    assert.equal(pubFromKey, pubFromCert, 'key matches certificate');
    assert.match(fs.readFileSync(path.join(e, 'key.pem'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);

    for (const [p7s, xml] of [
      [path.join(e, 'permissions.p7s'), path.join(e, 'permissions.xml')],
      [path.join(root, 'enclaves', 'governance.p7s'), path.join(root, 'enclaves', 'governance.xml')],
    ] as const) {
      const v = openssl(['smime', '-verify', '-text', '-in', p7s, '-CAfile', path.join(e, 'permissions_ca.cert.pem')]);
      assert.equal(v.status, 0, v.out);
      // openssl prints the signed text part as signed: CRLF line ends.
      assert.equal(v.stdout.replace(/\r\n/g, '\n'), fs.readFileSync(xml, 'utf8'), 'signed content equals the XML');
      const head = fs.readFileSync(p7s, 'utf8').split('\n').slice(0, 3);
      assert.equal(head[0], 'MIME-Version: 1.0');
      assert.match(head[1]!, /^Content-Type: multipart\/signed; protocol="application\/x-pkcs7-signature"; micalg="sha-256"; boundary="----[0-9A-F]{32}"$/);
    }
    const perms = fs.readFileSync(path.join(e, 'permissions.xml'), 'utf8');
    assert.match(perms, /<subject_name>CN=\/talker_listener\/talker<\/subject_name>/);
    assert.match(perms, /<id>7<\/id>/);
    assert.match(perms, /ros_discovery_info/);
    const nb = openssl(['x509', '-in', path.join(e, 'cert.pem'), '-noout', '-startdate']).out.trim();
    const notBefore = new Date(nb.replace('notBefore=', ''));
    const expected = notBefore.toISOString().slice(0, 19);
    assert.match(perms, new RegExp(`<not_before>${expected}</not_before>`), 'permissions validity = certificate validity');
  });

  test('split CA keystores sign permissions with the permissions CA and certificates with the identity CA', async () => {
    const res = await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'split', splitCa: true });
    assert.equal(res.status, 201);
    assert.equal(res.body.sharedCa, false);
    assert.notEqual(res.body.identityCa.fingerprintSha256, res.body.permissionsCa.fingerprintSha256);
    await request(ctx.app).post('/v1/keystores/split/enclaves').set(bearer(admin)).send({ path: '/a' }).expect(201);
    const { root } = await exportTo('split', path.join(work, 'split'));
    const e = path.join(root, 'enclaves', 'a');
    assert.equal(openssl(['verify', '-CAfile', path.join(root, 'public', 'identity_ca.cert.pem'), path.join(e, 'cert.pem')]).status, 0);
    assert.notEqual(openssl(['verify', '-CAfile', path.join(root, 'public', 'permissions_ca.cert.pem'), path.join(e, 'cert.pem')]).status, 0);
    const v = openssl(['smime', '-verify', '-text', '-in', path.join(e, 'permissions.p7s'), '-CAfile', path.join(root, 'public', 'permissions_ca.cert.pem'), '-nointern', '-certfile', path.join(root, 'public', 'permissions_ca.cert.pem')]);
    assert.equal(v.status, 0, v.out);
  });

  test('a policy produces its permissions; a bad one is a 422 naming the problem', async () => {
    const policy = fs.readFileSync(path.join(FIXTURES, 'policies', 'talker_listener.policy.xml'), 'utf8');
    const plain = await request(ctx.app).post('/v1/keystores/site_a/enclaves').set(bearer(admin)).send({ path: '/talker_listener/listener', policy });
    assert.equal(plain.status, 422, 'xi:include in a plain XML policy');
    assert.match(plain.body.error.message, /tar\.gz/);
    const archive = Buffer.from(
      (await import('node:child_process')).execFileSync('tar', ['-czf', '-', '-C', path.join(FIXTURES, 'policies'), 'talker_listener.policy.xml', 'common']),
    );
    const res = await request(ctx.app)
      .post('/v1/keystores/site_a/enclaves')
      .set(bearer(admin))
      .send({ path: '/talker_listener/listener', policyArchive: archive.toString('base64') });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.permissionsSource, 'policy');
    assert.match(res.body.permissionsXml, /<subscribe>\s*<topics>[\s\S]*<topic>rt\/chatter<\/topic>/);
    assert.doesNotMatch(res.body.permissionsXml, /<publish>\s*<topics>\s*<topic>rt\/chatter/);
    const missing = await request(ctx.app)
      .post('/v1/keystores/site_a/enclaves')
      .set(bearer(admin))
      .send({ path: '/not/in/policy', policyArchive: archive.toString('base64') });
    assert.equal(missing.status, 422);
    assert.match(missing.body.error.message, /no <enclave path="\/not\/in\/policy">/);
    const invalid = await request(ctx.app).post('/v1/keystores/site_a/enclaves').set(bearer(admin)).send({ path: '/x', policy: '<policy version="0.2.0"><nonsense/></policy>' });
    assert.equal(invalid.status, 422);
    assert.equal(invalid.body.error.code, 'invalid-policy');
  });

  const badNames: [string, RegExp][] = [
    ['', /empty|start/],
    ['//', /\/\//],
    ['foo', /start with '\/'/],
    ['/42foo', /digit/],
    ['/foo/42bar', /digit/],
    ['/foo/', /end with/],
    ['/a-b', /may contain only/],
  ];
  for (const [name, rule] of badNames) {
    test(`enclave name ${JSON.stringify(name)} → 422 naming the rule`, async () => {
      const res = await request(ctx.app).post('/v1/keystores/site_a/enclaves').set(bearer(admin)).send({ path: name });
      assert.equal(res.status, 422);
      assert.equal(res.body.error.code, 'invalid-enclave-name');
      assert.match(res.body.error.message, rule);
    });
  }

  test('batch creation: hundreds in one request, all or nothing', async () => {
    const paths = Array.from({ length: 300 }, (_, i) => `/fleet/robot_${i}/driver`);
    const res = await request(ctx.app).post('/v1/keystores/site_a/enclaves:batch').set(bearer(admin)).send({ paths });
    assert.equal(res.status, 201, JSON.stringify(res.body).slice(0, 300));
    assert.equal(res.body.created, 300);
    const clash = await request(ctx.app).post('/v1/keystores/site_a/enclaves:batch').set(bearer(admin)).send({ paths: ['/fleet/new_one', '/fleet/robot_5/driver'] });
    assert.equal(clash.status, 409);
    assert.equal((await request(ctx.app).get('/v1/keystores/site_a/enclaves/fleet/new_one').set(bearer(admin))).status, 404, 'nothing from a failed batch');
    const bad = await request(ctx.app).post('/v1/keystores/site_a/enclaves:batch').set(bearer(admin)).send({ paths: ['/ok_one', '/9bad'] });
    assert.equal(bad.status, 422);
    assert.equal((await request(ctx.app).get('/v1/keystores/site_a/enclaves/ok_one').set(bearer(admin))).status, 404);
  });

  test('rotate: new key, certificate and serial; permissions re-signed with the new validity', async () => {
    const before = (await request(ctx.app).get('/v1/keystores/site_a/enclaves/talker_listener/talker').set(bearer(admin))).body;
    const res = await request(ctx.app).post('/v1/keystores/site_a/enclaves/talker_listener/talker/rotate').set(bearer(admin)).send({ validityDays: 30 });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.notEqual(res.body.serial, before.serial);
    assert.notEqual(res.body.certificate, before.certificate);
    assert.ok(Date.parse(res.body.notAfter) - Date.now() < 31 * 86400_000);
    assert.match(res.body.permissionsXml, new RegExp(`<not_after>${res.body.notAfter.slice(0, 19)}</not_after>`));
  });

  test('governance can be replaced: validated, re-signed', async () => {
    const gov = fs.readFileSync(path.join(FIXTURES, 'governance.default.xml'), 'utf8').replace('<id>0</id>', '<id>7</id>').replace(/<rtps_protection_kind>SIGN<\/rtps_protection_kind>/, '<rtps_protection_kind>ENCRYPT</rtps_protection_kind>');
    const ok = await request(ctx.app).put('/v1/keystores/site_a/governance').set(bearer(admin)).type('application/xml').send(gov);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const bad = await request(ctx.app).put('/v1/keystores/site_a/governance').set(bearer(admin)).type('application/xml').send('<dds><nope/></dds>');
    assert.equal(bad.status, 422);
    assert.equal(bad.body.error.code, 'invalid-governance');
    const { root } = await exportTo('site_a', path.join(work, 'gov'));
    const v = openssl(['smime', '-verify', '-text', '-in', path.join(root, 'enclaves', 'governance.p7s'), '-CAfile', path.join(root, 'public', 'permissions_ca.cert.pem')]);
    assert.equal(v.status, 0, v.out);
    assert.match(v.out, /<rtps_protection_kind>ENCRYPT<\/rtps_protection_kind>/);
  });

  test('revocation: the served crl.pem makes openssl refuse the revoked certificate and accept the others', async () => {
    await request(ctx.app).post('/v1/keystores/site_a/enclaves:batch').set(bearer(admin)).send({ paths: ['/rev/bad', '/rev/good'] }).expect(201);
    const bad = (await request(ctx.app).get('/v1/keystores/site_a/enclaves/rev/bad').set(bearer(admin))).body;
    const good = (await request(ctx.app).get('/v1/keystores/site_a/enclaves/rev/good').set(bearer(admin))).body;
    const rev = await request(ctx.app).post('/v1/keystores/site_a/enclaves/rev/bad/revoke').set(bearer(admin));
    assert.equal(rev.status, 200);
    assert.equal(rev.body.status, 'revoked');
    const crl = (await keystoreRow(ctx, 'site_a')).crl_pem!;
    const ca = (await request(ctx.app).get('/v1/keystores/site_a').set(bearer(admin))).body.identityCa.certificate;
    const dir = path.join(work, 'crl');
    fs.mkdirSync(dir);
    for (const [name, content] of Object.entries({ 'crl.pem': crl, 'ca.pem': ca, 'bad.pem': bad.certificate, 'good.pem': good.certificate })) fs.writeFileSync(path.join(dir, name), content);
    assert.equal(openssl(['crl', '-in', path.join(dir, 'crl.pem'), '-CAfile', path.join(dir, 'ca.pem'), '-noout']).status, 0);
    const revoked = openssl(['verify', '-crl_check', '-CRLfile', path.join(dir, 'crl.pem'), '-CAfile', path.join(dir, 'ca.pem'), path.join(dir, 'bad.pem')]);
    assert.notEqual(revoked.status, 0);
    assert.match(revoked.out, /certificate revoked/);
    const fine = openssl(['verify', '-crl_check', '-CRLfile', path.join(dir, 'crl.pem'), '-CAfile', path.join(dir, 'ca.pem'), path.join(dir, 'good.pem')]);
    assert.equal(fine.status, 0, fine.out);
    const list = (await request(ctx.app).get('/v1/keystores/site_a/enclaves').set(bearer(admin))).body.enclaves;
    assert.equal(list.find((e: { path: string }) => e.path === '/rev/bad').status, 'revoked');
  });

  test('the fixture keystore imports, lists its two enclaves, exports, and the export re-imports', async () => {
    const archive = fs.readFileSync(path.join(FIXTURES, 'talker-listener-keystore.tar.gz'));
    const res = await request(ctx.app).post('/v1/keystores/imported/import').set(bearer(admin)).type('application/gzip').send(archive);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.enclaves, 2);
    assert.equal(res.body.origin, 'imported');
    assert.equal(res.body.importOnly, false);
    const list = (await request(ctx.app).get('/v1/keystores/imported/enclaves').set(bearer(admin))).body.enclaves;
    assert.deepEqual(list.map((e: { path: string }) => e.path), ['/talker_listener/listener', '/talker_listener/talker']);
    const again = await request(ctx.app).post('/v1/keystores/imported/import').set(bearer(admin)).type('application/gzip').send(archive);
    assert.equal(again.status, 409);
    const { archive: exported } = await exportTo('imported', path.join(work, 'imp'), true);
    const re = await request(ctx.app).post('/v1/keystores/reimported/import').set(bearer(admin)).type('application/gzip').send(exported);
    assert.equal(re.status, 201, JSON.stringify(re.body));
    assert.equal(re.body.enclaves, 2);
    assert.equal(re.body.identityCa.fingerprintSha256, res.body.identityCa.fingerprintSha256);
    // Rotating an imported enclave keeps its (directional) permissions, never widening them to allow-all.
    const before = (await request(ctx.app).get('/v1/keystores/imported/enclaves/talker_listener/talker').set(bearer(admin))).body;
    const rotated = (await request(ctx.app).post('/v1/keystores/imported/enclaves/talker_listener/talker/rotate').set(bearer(admin))).body;
    const rules = (x: string) => x.replace(/<validity>[\s\S]*?<\/validity>/g, '');
    assert.equal(rules(rotated.permissionsXml), rules(before.permissionsXml));
  });

  test('without CA keys the import is import-only: serves, cannot issue', async () => {
    const dir = path.join(work, 'nokeys');
    untar(fs.readFileSync(path.join(FIXTURES, 'talker-listener-keystore.tar.gz')), dir);
    fs.rmSync(path.join(dir, 'keystore', 'private'), { recursive: true });
    const archive = (await import('node:child_process')).execFileSync('tar', ['-czf', '-', '-C', dir, 'keystore']);
    const res = await request(ctx.app).post('/v1/keystores/readonly/import').set(bearer(admin)).type('application/gzip').send(archive);
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.importOnly, true);
    const create = await request(ctx.app).post('/v1/keystores/readonly/enclaves').set(bearer(admin)).send({ path: '/new' });
    assert.equal(create.status, 409);
    assert.equal(create.body.error.code, 'import-only');
  });

  test('corrupted imports are rejected with every problem and nothing stored', async () => {
    const dir = path.join(work, 'tampered');
    untar(fs.readFileSync(path.join(FIXTURES, 'talker-listener-keystore.tar.gz')), dir);
    const px = path.join(dir, 'keystore', 'enclaves', 'talker_listener', 'talker', 'permissions.xml');
    fs.writeFileSync(px, fs.readFileSync(px, 'utf8').replace('rt/chatter', 'rt/everything'));
    const other = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    fs.writeFileSync(path.join(dir, 'keystore', 'enclaves', 'talker_listener', 'listener', 'key.pem'), other);
    const archive = (await import('node:child_process')).execFileSync('tar', ['-czf', '-', '-C', dir, 'keystore']);
    const res = await request(ctx.app).post('/v1/keystores/tampered/import').set(bearer(admin)).type('application/gzip').send(archive);
    assert.equal(res.status, 422);
    assert.equal(res.body.error.code, 'invalid-keystore');
    const details = JSON.stringify(res.body.error.details);
    assert.match(details, /talker_listener\/talker/);
    assert.match(details, /talker_listener\/listener/);
    assert.ok(res.body.error.details.length >= 2);
    assert.equal((await request(ctx.app).get('/v1/keystores/tampered').set(bearer(admin))).status, 404);
    assert.equal(await count(ctx, "SELECT count(*) AS n FROM enclaves WHERE keystore = 'tampered'"), 0);
    const notGzip = await request(ctx.app).post('/v1/keystores/junk/import').set(bearer(admin)).type('application/gzip').send(Buffer.from('not an archive'));
    assert.equal(notGzip.status, 422);
  });

  test('the store holds no private key in clear', async () => {
    const bytes = await storedBytes(ctx);
    assert.equal(bytes.includes('PRIVATE KEY'), false);
    // The raw key bytes (the base64 body and the DER) of keys we know were issued are nowhere in the file.
    const { root } = await exportTo('site_a', path.join(work, 'grep'));
    const keyPem = fs.readFileSync(path.join(root, 'enclaves', 'talker_listener', 'talker', 'key.pem'), 'utf8');
    const der = crypto.createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
    const d = crypto.createPrivateKey(keyPem).export({ format: 'jwk' }).d!;
    assert.equal(bytes.includes(der), false);
    assert.equal(bytes.includes(Buffer.from(d, 'base64url')), false);
    assert.equal(bytes.includes(keyPem.split('\n')[1]!), false);
  });

  test('delete: an active enclave is revoked and removed', async () => {
    await request(ctx.app).post('/v1/keystores/site_a/enclaves').set(bearer(admin)).send({ path: '/doomed' }).expect(201);
    await request(ctx.app).delete('/v1/keystores/site_a/enclaves/doomed').set(bearer(admin)).expect(204);
    assert.equal((await request(ctx.app).get('/v1/keystores/site_a/enclaves/doomed').set(bearer(admin))).status, 404);
    const audit = (await request(ctx.app).get('/v1/audit?action=enclave.delete').set(bearer(admin))).body.entries[0];
    assert.equal(audit.details.revoked, true);
    await request(ctx.app).delete('/v1/keystores/split').set(bearer(admin)).expect(204);
    assert.equal((await request(ctx.app).get('/v1/keystores/split').set(bearer(admin))).status, 404);
  });
});

describe('concurrent batches', () => {
  test('two overlapping batches at once: one wins, the other is a 409, nothing half-stored', async () => {
    const ctx = await makeTestApp();
    try {
      const admin = await ctx.adminToken();
      await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'race' }).expect(201);
      const paths = Array.from({ length: 400 }, (_, i) => `/race/r_${i}`);
      const [a, b] = await Promise.all([
        request(ctx.app).post('/v1/keystores/race/enclaves:batch').set(bearer(admin)).send({ paths }),
        request(ctx.app).post('/v1/keystores/race/enclaves:batch').set(bearer(admin)).send({ paths: [...paths.slice(200), '/race/extra'] }),
      ]);
      assert.deepEqual([a.status, b.status].sort(), [201, 409]);
      assert.equal(await count(ctx, "SELECT count(*) AS n FROM enclaves WHERE keystore = 'race'"), a.status === 201 ? 400 : 201);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

describe('imported CRLs', () => {
  test('a short-lived imported CRL is re-signed to last as long as the CA; without the CA key it is refused', async () => {
    const ctx = await makeTestApp();
    try {
      const admin = await ctx.adminToken();
      const { execFileSync } = await import('node:child_process');
      const { issueCrl, readCrl, inspectCertificate } = await import('../server/pki/index.js');
      await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'src' }).expect(201);
      await request(ctx.app).post('/v1/keystores/src/enclaves:batch').set(bearer(admin)).send({ paths: ['/keep', '/gone'] }).expect(201);
      const gone = (await request(ctx.app).get('/v1/keystores/src/enclaves/gone').set(bearer(admin))).body.serial as string;
      const res = await request(ctx.app).get('/v1/keystores/src/export?private=true').set(bearer(admin)).buffer(true).parse(binaryParser);
      const dir = path.join(ctx.dir, 'crl-import');
      untar(res.body as Buffer, dir);
      const root = path.join(dir, 'keystore');
      const caCert = fs.readFileSync(path.join(root, 'public', 'ca.cert.pem'), 'utf8');
      const caKey = fs.readFileSync(path.join(root, 'private', 'ca.key.pem'), 'utf8');
      const now = new Date();
      const shortCrl = issueCrl({ issuer: { certPem: caCert, keyPem: caKey }, revoked: [{ serialHex: gone, revokedAt: now }], thisUpdate: now, nextUpdate: new Date(now.getTime() + 86400_000), crlNumber: 7 });
      fs.writeFileSync(path.join(root, 'public', 'crl.pem'), shortCrl);
      fs.rmSync(path.join(root, 'enclaves', 'gone'), { recursive: true });
      const withKey = execFileSync('tar', ['-czf', '-', '-C', dir, 'keystore']);
      const imported = await request(ctx.app).post('/v1/keystores/withkey/import').set(bearer(admin)).type('application/gzip').send(withKey);
      assert.equal(imported.status, 201, JSON.stringify(imported.body));
      const stored = (await keystoreRow(ctx, 'withkey')).crl_pem!;
      const read = readCrl(stored, caCert);
      assert.deepEqual([...read.revokedSerials], [gone]);
      assert.equal(read.nextUpdate?.toISOString(), inspectCertificate(caCert).notAfter.toISOString());
      fs.rmSync(path.join(root, 'private'), { recursive: true });
      const withoutKey = execFileSync('tar', ['-czf', '-', '-C', dir, 'keystore']);
      const refused = await request(ctx.app).post('/v1/keystores/nokey/import').set(bearer(admin)).type('application/gzip').send(withoutKey);
      assert.equal(refused.status, 422);
      assert.match(refused.body.error.message, /crl\.pem expires/);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

describe('concurrent keystore creation', () => {
  test('the same name created five times at once: one 201, the rest 409, never a 500', async () => {
    const ctx = await makeTestApp();
    try {
      const admin = await ctx.adminToken();
      const results = await Promise.all(Array.from({ length: 5 }, () => request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'twin' })));
      assert.deepEqual(results.map((r) => r.status).sort(), [201, 409, 409, 409, 409]);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

describe('rotation after a suspected leak', () => {
  test('revokePrevious puts the old serial on the CRL; a plain rotation does not', async () => {
    const ctx = await makeTestApp();
    try {
      const admin = await ctx.adminToken();
      const { readCrl } = await import('../server/pki/index.js');
      await request(ctx.app).post('/v1/keystores').set(bearer(admin)).send({ name: 'k' }).expect(201);
      const first = (await request(ctx.app).post('/v1/keystores/k/enclaves').set(bearer(admin)).send({ path: '/a' })).body.serial;
      const second = (await request(ctx.app).post('/v1/keystores/k/enclaves/a/rotate').set(bearer(admin)).send({})).body.serial;
      assert.equal((await keystoreRow(ctx, 'k')).crl_pem, null);
      const third = (await request(ctx.app).post('/v1/keystores/k/enclaves/a/rotate').set(bearer(admin)).send({ revokePrevious: true })).body;
      assert.equal(third.status, 'active');
      const ks = await keystoreRow(ctx, 'k');
      const revoked = readCrl(ks.crl_pem!, ks.identity_ca_cert).revokedSerials;
      assert.deepEqual([...revoked], [second]);
      assert.ok(!revoked.has(first) && !revoked.has(third.serial));
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

// A first-time user: a revoked enclave had no way back ("rotate" said revoked, "create" said it exists).
describe('re-issuing a revoked enclave', () => {
  test('create names the way out; rotate issues a fresh active one under the same path; the old serial stays revoked', async () => {
    const ctx = await makeTestApp();
    try {
      const admin = bearer(await ctx.adminToken());
      const { readCrl } = await import('../server/pki/index.js');
      await request(ctx.app).post('/v1/keystores').set(admin).send({ name: 'k' }).expect(201);
      const old = (await request(ctx.app).post('/v1/keystores/k/enclaves').set(admin).send({ path: '/cam' }).expect(201)).body;
      await request(ctx.app).post('/v1/keystores/k/enclaves/cam/revoke').set(admin).expect(200);
      const again = await request(ctx.app).post('/v1/keystores/k/enclaves').set(admin).send({ path: '/cam' });
      assert.equal(again.status, 409);
      assert.match(again.body.error.message, /revoked: rotate it \(enclavectl enclave rotate k \/cam\)/);
      const policy = await request(ctx.app).put('/v1/keystores/k/enclaves/cam/policy').set(admin).type('application/xml').send('<policy version="0.2.0"/>');
      assert.equal(policy.status, 409);
      assert.match(policy.body.error.message, /rotate it/);
      const fresh = await request(ctx.app).post('/v1/keystores/k/enclaves/cam/rotate').set(admin).send({}).expect(200);
      assert.equal(fresh.body.status, 'active');
      assert.notEqual(fresh.body.serial, old.serial);
      const ks = await keystoreRow(ctx, 'k');
      const revoked = readCrl(ks.crl_pem!, ks.identity_ca_cert).revokedSerials;
      assert.ok(revoked.has(old.serial) && !revoked.has(fresh.body.serial));
      const audit = await request(ctx.app).get('/v1/audit?action=enclave.reissue').set(admin);
      assert.equal(audit.body.entries.length, 1);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});
