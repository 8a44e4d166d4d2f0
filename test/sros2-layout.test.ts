import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { InvalidInput, PayloadTooLarge } from '../server/errors.js';
import { readTarGz, writeTarGz, type ArchiveEntry } from '../server/keystores/archive.js';
import type { KeystoreMaterial } from '../server/keystores/model.js';
import { inspectCertificate, issueCrl } from '../server/pki/index.js';
import { readSros2Keystore, writeSros2Keystore, type Sros2ReadResult } from '../server/keystores/sros2-layout.js';
import { FIXTURES } from './helpers/tools.js';

const FIXTURE = `${FIXTURES}/talker-listener-keystore.tar.gz`;
const LIMITS = { maxUnpackedBytes: 16 * 1024 * 1024, maxEntries: 2000, maxFileBytes: 1024 * 1024 };
/** The fixture's certificates run from 2026-11-25T23:44:08Z for 10 years: pin the clock inside that. */
const NOW = new Date('2026-12-01T00:00:00Z');
/** openssl verify, the referee, reads the material at the test's clock too (the CRLs here end 2027-11-26). */
const AT_NOW = ['-attime', String(NOW.getTime() / 1000)];
const TALKER = 'keystore/enclaves/talker_listener/talker';
const LISTENER = 'keystore/enclaves/talker_listener/listener';

let tmp: string;
let counter = 0;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'sros2-layout-test-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

function sh(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A fresh folder holding the fixture extracted with the real tar (symlinks kept). */
function extractFixture(): string {
  const dir = join(tmp, `ks${++counter}`);
  mkdirSync(dir);
  sh('tar', ['-xzf', FIXTURE, '-C', dir]);
  return dir;
}

/** Packs `dir`'s `what` (default `keystore`) with the real tar. */
function pack(dir: string, what = 'keystore'): Buffer {
  const out = join(tmp, `pack${++counter}.tar.gz`);
  sh('tar', ['-czf', out, '-C', dir, what]);
  return readFileSync(out);
}

async function importArchive(data: Buffer, now = NOW): Promise<Sros2ReadResult> {
  return readSros2Keystore(await readTarGz(data, LIMITS), now);
}

/** Re-signs `xmlFile` like sros2 does (S/MIME text mode, detached, SHA-256) with the fixture's own CA. */
function resignWithFixtureCa(dir: string, xmlFile: string, p7sFile: string): void {
  sh('openssl', [
    'smime', '-sign', '-text', '-md', 'sha256',
    '-in', join(dir, xmlFile), '-out', join(dir, p7sFile),
    '-signer', join(dir, 'keystore/public/ca.cert.pem'), '-inkey', join(dir, 'keystore/private/ca.key.pem'),
  ]);
}

function ecKey(file: string): void {
  sh('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
}

/** A moment inside the validity of `certFile` (one minute after it starts), for material openssl just made. */
function clockOf(certFile: string): Date {
  return new Date(Date.parse(new X509Certificate(readFileSync(certFile)).validFrom) + 60_000);
}

/** A self-signed CA like sros2's (CN, basicConstraints critical CA:TRUE pathlen 1). */
function makeCa(dir: string, name: string, cn = 'sros2CA'): { cert: string; key: string } {
  const key = join(dir, `${name}.key.pem`);
  const cert = join(dir, `${name}.cert.pem`);
  ecKey(key);
  sh('openssl', [
    'req', '-x509', '-new', '-key', key, '-subj', `/CN=${cn}`, '-days', '30', '-sha256',
    '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:1', '-out', cert,
  ]);
  return { cert, key };
}

/** An enclave key + certificate (CN=<enclave path>, CA:FALSE) issued by `ca`. */
function makeEnclaveCert(dir: string, ca: { cert: string; key: string }, enclave: string): void {
  ecKey(join(dir, 'key.pem'));
  const csr = join(dir, 'req.csr');
  const ext = join(dir, 'ext.cnf');
  writeFileSync(ext, 'basicConstraints=CA:FALSE\n');
  sh('openssl', ['req', '-new', '-key', join(dir, 'key.pem'), '-subj', `/CN=${enclave.replaceAll('/', '\\/')}`, '-out', csr]);
  sh('openssl', [
    'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-days', '30', '-sha256',
    '-set_serial', `0x${randomBytes(19).toString('hex')}`, '-extfile', ext, '-out', join(dir, 'cert.pem'),
  ]);
  rmSync(csr);
  rmSync(ext);
}

type RawEntry = Partial<Header> & { name: string; content?: string | Buffer };

/** The fixture's entries re-packed with tar-stream, plus `extra` (for entries the real tar won't write). */
async function fixturePlus(extra: RawEntry[]): Promise<Buffer> {
  const entries = await readTarGz(readFileSync(FIXTURE), LIMITS);
  const raw: RawEntry[] = [];
  for (const [name, e] of entries) {
    if (e.type === 'file') raw.push({ name, content: e.content });
    else if (e.type === 'directory') raw.push({ name, type: 'directory' });
    else raw.push({ name, type: 'symlink', linkname: e.target });
  }
  raw.push(...extra);
  const p = tar.pack();
  const gzip = zlib.createGzip();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve) => {
    gzip.on('data', (c: Buffer) => chunks.push(c));
    gzip.on('end', () => resolve(Buffer.concat(chunks)));
  });
  p.pipe(gzip);
  for (const { content, ...header } of raw) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (content !== undefined) p.entry(header, content, cb);
      else p.entry(header, cb);
    });
  }
  p.finalize();
  return done;
}

function findListing(dir: string): string[] {
  return sh('find', ['keystore', '-printf', '%y %p %l\n'], dir).trim().split('\n').sort();
}

function assertRejected(result: Sros2ReadResult, ...expected: RegExp[]): void {
  assert.equal(result.material, undefined, 'no material when there are problems');
  for (const re of expected) {
    assert.ok(
      result.problems.some((p) => re.test(p)),
      `expected a problem matching ${re}, got:\n  ${result.problems.join('\n  ')}`,
    );
  }
}

describe('readSros2Keystore: the sros2 fixture', () => {
  it('imports with no problems', async () => {
    const { material, problems } = await importArchive(readFileSync(FIXTURE));
    assert.deepEqual(problems, []);
    assert.ok(material);
    assert.deepEqual(
      material.enclaves.map((e) => e.path),
      ['/talker_listener/listener', '/talker_listener/talker'],
    );
    assert.equal(material.sharedCa, true);
    assert.equal(material.domainId, 0);
    assert.equal(material.identityCaCertPem, material.permissionsCaCertPem);
    assert.match(material.identityCaKeyPem ?? '', /BEGIN PRIVATE KEY/);
    assert.equal(material.permissionsCaKeyPem, material.identityCaKeyPem);
    assert.match(material.governanceXml, /<domain_rule>/);
    assert.match(material.governanceP7s, /^MIME-Version: 1\.0/);
    const talker = material.enclaves[1]!;
    assert.match(talker.certPem, /BEGIN CERTIFICATE/);
    assert.match(talker.keyPem, /BEGIN PRIVATE KEY/);
    assert.match(talker.permissionsXml, /CN=\/talker_listener\/talker/);
    assert.match(talker.permissionsP7s, /multipart\/signed/);
  });

  it('imports with public/ private/ enclaves/ at the archive root', async () => {
    const dir = extractFixture();
    const { material, problems } = await importArchive(pack(join(dir, 'keystore'), '.'));
    assert.deepEqual(problems, []);
    assert.equal(material?.enclaves.length, 2);
  });

  it('imports without private/ (import-only: no CA keys)', async () => {
    const dir = extractFixture();
    rmSync(join(dir, 'keystore/private'), { recursive: true });
    const { material, problems } = await importArchive(pack(dir));
    assert.deepEqual(problems, []);
    assert.ok(material);
    assert.equal(material.identityCaKeyPem, undefined);
    assert.equal(material.permissionsCaKeyPem, undefined);
    assert.equal(material.enclaves.length, 2);
  });

  it('applies the validity rule: expired refused, a start up to a day ahead accepted', async () => {
    const entries = await readTarGz(readFileSync(FIXTURE), LIMITS);
    assertRejected(
      readSros2Keystore(entries, new Date('2037-01-01T00:00:00Z')),
      /^public\/identity_ca\.cert\.pem: the identity and permissions CA certificate expired on 2036-11-23T23:44:08Z$/,
      /^enclave \/talker_listener\/talker: cert\.pem expired on 2036-11-23T23:44:08Z/,
      /^enclave \/talker_listener\/talker: permissions\.xml grant "\/talker_listener\/talker" expired/,
    );
    assertRejected(
      readSros2Keystore(entries, new Date('2026-11-24T00:00:00Z')),
      /^enclave \/talker_listener\/listener: cert\.pem is not valid before 2026-11-25T23:44:08Z/,
    );
    assert.deepEqual(readSros2Keystore(entries, new Date('2026-11-25T12:00:00Z')).problems, []);
  });
});

describe('readSros2Keystore: corrupted keystores are refused with precise messages', () => {
  it('a permissions.xml changed after signing', async () => {
    const dir = extractFixture();
    const f = join(dir, TALKER, 'permissions.xml');
    writeFileSync(f, readFileSync(f, 'utf8').replace('<topic>rt/chatter</topic>', '<topic>rt/chatter</topic><topic>rt/cmd_vel</topic>'));
    const r = await importArchive(pack(dir));
    assertRejected(r, /^enclave \/talker_listener\/talker: permissions\.p7s: the signed content differs from permissions\.xml$/);
    assert.equal(r.problems.length, 1, r.problems.join('\n'));
  });

  it('a tampered permissions.p7s', async () => {
    const dir = extractFixture();
    const f = join(dir, LISTENER, 'permissions.p7s');
    writeFileSync(f, readFileSync(f, 'utf8').replace('<topic>rt/chatter</topic>', '<topic>rt/chatteR</topic>'));
    const r = await importArchive(pack(dir));
    assertRejected(r, /^enclave \/talker_listener\/listener: permissions\.p7s signature does not match its content \(checked against the permissions CA\)$/);
  });

  it('a governance.xml changed after signing', async () => {
    const dir = extractFixture();
    const f = join(dir, 'keystore/enclaves/governance.xml');
    writeFileSync(f, readFileSync(f, 'utf8').replace('<id>0</id>', '<id>5</id>'));
    const r = await importArchive(pack(dir));
    assertRejected(r, /^enclaves\/governance\.p7s: the signed content differs from enclaves\/governance\.xml$/);
  });

  it('a certificate from another CA (same CA name, so only a real signature check catches it)', async () => {
    const dir = extractFixture();
    const other = makeCa(dir, 'other');
    makeEnclaveCert(join(dir, TALKER), other, '/talker_listener/talker');
    rmSync(other.key);
    rmSync(other.cert);
    // openssl signed with the machine's clock: read the import at the moment the new certificate starts, so
    // that only the signature is wrong on any date.
    const r = await importArchive(pack(dir), clockOf(join(dir, TALKER, 'cert.pem')));
    assertRejected(r, /^enclave \/talker_listener\/talker: cert\.pem is not signed by the identity CA/);
    assert.equal(r.problems.length, 1, r.problems.join('\n'));
  });

  it('a key.pem that does not match its certificate', async () => {
    const dir = extractFixture();
    writeFileSync(join(dir, TALKER, 'key.pem'), readFileSync(join(dir, LISTENER, 'key.pem')));
    const r = await importArchive(pack(dir));
    assertRejected(r, /^enclave \/talker_listener\/talker: key\.pem does not match cert\.pem$/);
    assert.equal(r.problems.length, 1, r.problems.join('\n'));
  });

  it('a CA key that does not match the CA certificate', async () => {
    const dir = extractFixture();
    writeFileSync(join(dir, 'keystore/private/ca.key.pem'), readFileSync(join(dir, TALKER, 'key.pem')));
    const r = await importArchive(pack(dir));
    assertRejected(
      r,
      /^private\/identity_ca\.key\.pem does not match the identity CA certificate$/,
      /^private\/ca\.key\.pem matches neither/,
    );
  });

  it('a grant whose subject_name is not the certificate subject (re-signed, so only that check fails)', async () => {
    const dir = extractFixture();
    const f = join(dir, TALKER, 'permissions.xml');
    writeFileSync(
      f,
      readFileSync(f, 'utf8').replace('<subject_name>CN=/talker_listener/talker<', '<subject_name>CN=/talker_listener/listener<'),
    );
    resignWithFixtureCa(dir, `${TALKER}/permissions.xml`, `${TALKER}/permissions.p7s`);
    const r = await importArchive(pack(dir));
    assertRejected(
      r,
      /^enclave \/talker_listener\/talker: permissions\.xml grant "\/talker_listener\/talker": subject_name "CN=\/talker_listener\/listener" does not match the certificate subject "CN=\/talker_listener\/talker"$/,
    );
    assert.equal(r.problems.length, 1, r.problems.join('\n'));
  });

  it('an enclave folder with an invalid name', async () => {
    const dir = extractFixture();
    mkdirSync(join(dir, 'keystore/enclaves/42bad'));
    writeFileSync(join(dir, 'keystore/enclaves/42bad/key.pem'), readFileSync(join(dir, TALKER, 'key.pem')));
    const r = await importArchive(pack(dir));
    assertRejected(
      r,
      /^enclave \/42bad: invalid enclave name \(segment '42bad' must not start with a digit\)$/,
      /^enclave \/42bad: cert\.pem is missing$/,
      /^enclave \/42bad: permissions\.xml is missing$/,
      /^enclave \/42bad: permissions\.p7s is missing$/,
    );
  });

  it('every problem is reported at once, and missing governance is named', async () => {
    const dir = extractFixture();
    rmSync(join(dir, 'keystore/enclaves/governance.xml'));
    rmSync(join(dir, TALKER, 'permissions.p7s'));
    writeFileSync(join(dir, LISTENER, 'key.pem'), readFileSync(join(dir, TALKER, 'key.pem')));
    const r = await importArchive(pack(dir));
    assertRejected(
      r,
      /^enclaves\/governance\.xml is missing$/,
      /^enclave \/talker_listener\/talker: permissions\.p7s is missing$/,
      /^enclave \/talker_listener\/listener: key\.pem does not match cert\.pem$/,
    );
  });

  it("an enclave symlink that is not the keystore's own CA or governance", async () => {
    const dir = extractFixture();
    rmSync(join(dir, TALKER, 'identity_ca.cert.pem'));
    symlinkSync('../listener/cert.pem', join(dir, TALKER, 'identity_ca.cert.pem'));
    rmSync(join(dir, TALKER, 'governance.p7s'));
    symlinkSync('permissions.p7s', join(dir, TALKER, 'governance.p7s'));
    rmSync(join(dir, LISTENER, 'permissions_ca.cert.pem'));
    symlinkSync('../../nowhere.pem', join(dir, LISTENER, 'permissions_ca.cert.pem'));
    const r = await importArchive(pack(dir));
    assertRejected(
      r,
      /^enclave \/talker_listener\/talker: identity_ca\.cert\.pem is not the keystore's identity CA certificate$/,
      /^enclave \/talker_listener\/talker: governance\.p7s is not the keystore's enclaves\/governance\.p7s$/,
      /^enclave \/talker_listener\/listener: permissions_ca\.cert\.pem is a symlink \(to "\.\.\/\.\.\/nowhere\.pem"\) that does not lead to a file$/,
    );
  });

  it('an archive with no keystore in it', async () => {
    const dir = join(tmp, `empty${++counter}`);
    mkdirSync(join(dir, 'a'), { recursive: true });
    mkdirSync(join(dir, 'b'), { recursive: true });
    assertRejected(await importArchive(pack(dir, '.')), /^no keystore found/);
  });

  const unsafe: Array<[string, RawEntry[], RegExp]> = [
    ['a path escaping the archive', [{ name: '../evil', content: 'x' }], /archive entry "\.\.\/evil": '\.\.' in a path is not allowed/],
    ['an absolute path', [{ name: '/keystore/enclaves/x/key.pem', content: 'x' }], /archive entry "\/keystore\/enclaves\/x\/key\.pem": absolute paths are not allowed/],
    [
      'a symlink to /etc/passwd',
      [{ name: 'keystore/enclaves/evil/key.pem', type: 'symlink', linkname: '/etc/passwd' }],
      /archive entry "keystore\/enclaves\/evil\/key\.pem": symlink to an absolute path \("\/etc\/passwd"\)/,
    ],
    [
      'a relative symlink climbing out',
      [{ name: 'keystore/enclaves/evil.pem', type: 'symlink', linkname: '../../../etc/passwd' }],
      /archive entry "keystore\/enclaves\/evil\.pem": symlink to "\.\.\/\.\.\/\.\.\/etc\/passwd" resolves outside the archive/,
    ],
    ['a device file', [{ name: 'keystore/enclaves/zero', type: 'character-device', devmajor: 1, devminor: 5 }], /archive entry "keystore\/enclaves\/zero": device files are not allowed/],
    ['a hard link', [{ name: 'keystore/enclaves/h', type: 'link', linkname: 'keystore/private/ca.key.pem' }], /archive entry "keystore\/enclaves\/h": hard links are not allowed/],
  ];
  for (const [what, extra, message] of unsafe) {
    it(what, async () => {
      await assert.rejects(importArchive(await fixturePlus(extra)), (err: unknown) => {
        assert.ok(err instanceof InvalidInput, String(err));
        assert.equal(err.status, 422);
        assert.match(err.message, message);
        return true;
      });
    });
  }

  it('a tar bomb gets 413', async () => {
    const bomb = await fixturePlus([{ name: 'keystore/zeros', content: Buffer.alloc(20 * 1024 * 1024) }]);
    assert.ok(bomb.length < 100 * 1024);
    await assert.rejects(importArchive(bomb), (err: unknown) => {
      assert.ok(err instanceof PayloadTooLarge, String(err));
      assert.equal(err.status, 413);
      return true;
    });
  });
});

describe('writeSros2Keystore', () => {
  let material: KeystoreMaterial;
  before(async () => {
    const r = await importArchive(readFileSync(FIXTURE));
    assert.ok(r.material);
    material = r.material;
  });

  async function exportTo(m: KeystoreMaterial, includeCaKeys: boolean, extras = {}): Promise<{ dir: string; data: Buffer }> {
    const data = await writeTarGz(writeSros2Keystore(m, { includeCaKeys }, extras), { mtime: new Date('2026-11-26T00:00:00Z') });
    const dir = join(tmp, `export${++counter}`);
    mkdirSync(dir);
    const file = join(tmp, `export${counter}.tar.gz`);
    writeFileSync(file, data);
    sh('tar', ['-xzf', file, '-C', dir]);
    return { dir, data };
  }

  it("exports exactly the fixture's layout; openssl verifies through the symlinks; re-imports", async () => {
    const { dir, data } = await exportTo(material, true);
    assert.deepEqual(findListing(dir), findListing(extractFixture()));

    const talker = join(dir, 'keystore/enclaves/talker_listener/talker');
    assert.match(
      sh('openssl', ['verify', ...AT_NOW, '-CAfile', 'keystore/public/identity_ca.cert.pem', 'keystore/enclaves/talker_listener/talker/cert.pem'], dir),
      /cert\.pem: OK/,
    );
    assert.match(sh('openssl', ['verify', ...AT_NOW, '-CAfile', join(talker, 'identity_ca.cert.pem'), join(talker, 'cert.pem')]), /: OK/);
    const text = execFileSync(
      'openssl',
      ['smime', '-verify', ...AT_NOW, '-text', '-in', join(talker, 'permissions.p7s'), '-CAfile', join(talker, 'permissions_ca.cert.pem')],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    assert.match(text, /<subject_name>CN=\/talker_listener\/talker<\/subject_name>/);
    execFileSync('openssl', ['smime', '-verify', ...AT_NOW, '-text', '-in', join(talker, 'governance.p7s'), '-CAfile', join(talker, 'permissions_ca.cert.pem')], {
      stdio: 'ignore',
    });
    // Private keys are 0600, the rest 0644.
    const modes = sh('find', ['keystore', '-type', 'f', '-printf', '%m %p\n'], dir).trim().split('\n');
    for (const line of modes) assert.equal(line.split(' ')[0], line.endsWith('key.pem') ? '600' : '644', line);

    const again = await importArchive(data);
    assert.deepEqual(again.problems, []);
    assert.deepEqual(again.material, material);
  });

  it('without includeCaKeys writes no private/ and re-imports as import-only', async () => {
    const { dir, data } = await exportTo(material, false);
    const listing = findListing(dir);
    assert.ok(!listing.some((l) => l.includes('keystore/private')), listing.join('\n'));
    assert.ok(!listing.some((l) => l.includes('ca.key.pem')));
    const again = await importArchive(data);
    assert.deepEqual(again.problems, []);
    assert.equal(again.material?.identityCaKeyPem, undefined);
    assert.equal(again.material?.permissionsCaKeyPem, undefined);
  });

  it('adjusts the symlinks to the enclave depth', async () => {
    const talker = material.enclaves[1]!;
    const entries = writeSros2Keystore({ ...material, enclaves: [{ ...talker, path: '/a' }, { ...talker, path: '/x/y/z' }] }, { includeCaKeys: false });
    const links = Object.fromEntries(entries.filter((e) => e.type === 'symlink').map((e) => [e.path, e.target]));
    assert.equal(links['keystore/enclaves/a/identity_ca.cert.pem'], '../../public/identity_ca.cert.pem');
    assert.equal(links['keystore/enclaves/a/governance.p7s'], '../governance.p7s');
    assert.equal(links['keystore/enclaves/x/y/z/permissions_ca.cert.pem'], '../../../../public/permissions_ca.cert.pem');
    assert.equal(links['keystore/enclaves/x/y/z/governance.p7s'], '../../../governance.p7s');
  });

  it('writes the optional CRL as public/crl.pem with a crl.pem symlink in every enclave', async () => {
    const crlPem = '-----BEGIN X509 CRL-----\nMA==\n-----END X509 CRL-----\n';
    const { dir } = await exportTo(material, false, { crlPem });
    assert.equal(readFileSync(join(dir, 'keystore/public/crl.pem'), 'utf8'), crlPem);
    assert.equal(readFileSync(join(dir, TALKER, 'crl.pem'), 'utf8'), crlPem);
  });
});

describe('split identity / permissions CAs', () => {
  let split: Buffer;
  before(() => {
    // Built with the openssl CLI only: two CAs, one enclave /robot/one, domain 7.
    const dir = join(tmp, `split${++counter}`);
    const ks = join(dir, 'keystore');
    for (const d of ['public', 'private', 'enclaves/robot/one']) mkdirSync(join(ks, d), { recursive: true });
    const idCa = makeCa(join(ks, 'private'), 'identity_ca', 'Identity CA');
    const permCa = makeCa(join(ks, 'private'), 'permissions_ca', 'Permissions CA');
    sh('mv', [idCa.cert, join(ks, 'public/identity_ca.cert.pem')]);
    sh('mv', [permCa.cert, join(ks, 'public/permissions_ca.cert.pem')]);
    idCa.cert = join(ks, 'public/identity_ca.cert.pem');
    permCa.cert = join(ks, 'public/permissions_ca.cert.pem');
    const sign = (xml: string, p7s: string): void =>
      void sh('openssl', ['smime', '-sign', '-text', '-md', 'sha256', '-in', xml, '-out', p7s, '-signer', permCa.cert, '-inkey', permCa.key]);
    const governance = readFileSync(`${FIXTURES}/governance.default.xml`, 'utf8').replace('<id>0</id>', '<id>7</id>');
    writeFileSync(join(ks, 'enclaves/governance.xml'), governance);
    sign(join(ks, 'enclaves/governance.xml'), join(ks, 'enclaves/governance.p7s'));
    const enclave = join(ks, 'enclaves/robot/one');
    makeEnclaveCert(enclave, idCa, '/robot/one');
    const fixture = extractFixture();
    const permissions = readFileSync(join(fixture, TALKER, 'permissions.xml'), 'utf8')
      .replaceAll('/talker_listener/talker', '/robot/one')
      .replaceAll('<id>0</id>', '<id>7</id>')
      .replace(/<not_before>[^<]*</, '<not_before>2026-11-01T00:00:00<')
      .replace(/<not_after>[^<]*</, '<not_after>2030-01-01T00:00:00<');
    writeFileSync(join(enclave, 'permissions.xml'), permissions);
    sign(join(enclave, 'permissions.xml'), join(enclave, 'permissions.p7s'));
    symlinkSync('../../../public/identity_ca.cert.pem', join(enclave, 'identity_ca.cert.pem'));
    symlinkSync('../../../public/permissions_ca.cert.pem', join(enclave, 'permissions_ca.cert.pem'));
    symlinkSync('../../governance.p7s', join(enclave, 'governance.p7s'));
    split = pack(dir);
  });

  it('imports as sharedCa=false with both keys and the governance domain', async () => {
    const { material, problems } = await importArchive(split, new Date());
    assert.deepEqual(problems, []);
    assert.ok(material);
    assert.equal(material.sharedCa, false);
    assert.notEqual(material.identityCaCertPem, material.permissionsCaCertPem);
    assert.match(material.identityCaKeyPem ?? '', /PRIVATE KEY/);
    assert.match(material.permissionsCaKeyPem ?? '', /PRIVATE KEY/);
    assert.notEqual(material.identityCaKeyPem, material.permissionsCaKeyPem);
    assert.equal(material.domainId, 7);
    assert.deepEqual(material.enclaves.map((e) => e.path), ['/robot/one']);
  });

  it('refuses permissions signed by the identity CA instead of the permissions CA', async () => {
    const entries = new Map<string, ArchiveEntry>(await readTarGz(split, LIMITS));
    // Swap the role: present the identity CA as the permissions CA.
    entries.set('keystore/public/permissions_ca.cert.pem', entries.get('keystore/public/identity_ca.cert.pem')!);
    entries.delete('keystore/private/permissions_ca.key.pem');
    const r = readSros2Keystore(entries, new Date());
    assertRejected(r, /^enclaves\/governance\.p7s signer does not chain to the permissions CA$/, /^enclave \/robot\/one: permissions\.p7s signer does not chain to the permissions CA$/);
  });

  it('exports real files public/identity_ca.cert.pem + permissions_ca.cert.pem and round-trips', async () => {
    const { material } = await importArchive(split, new Date());
    assert.ok(material);
    const entries = writeSros2Keystore(material, { includeCaKeys: true });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    assert.equal(byPath.get('keystore/public/identity_ca.cert.pem')?.type, 'file');
    assert.equal(byPath.get('keystore/public/permissions_ca.cert.pem')?.type, 'file');
    assert.equal(byPath.get('keystore/private/identity_ca.key.pem')?.type, 'file');
    assert.equal(byPath.get('keystore/private/permissions_ca.key.pem')?.type, 'file');
    assert.equal(byPath.has('keystore/public/ca.cert.pem'), false);
    const again = await importArchive(await writeTarGz(entries), new Date());
    assert.deepEqual(again.problems, []);
    assert.deepEqual(again.material, material);
  });
});

describe('identity CRL (public/crl.pem, an extension to sros2)', () => {
  const crlFor = (dir: string, serials: string[], ca = { cert: join(dir, 'keystore/public/ca.cert.pem'), key: join(dir, 'keystore/private/ca.key.pem') }): string =>
    issueCrl({
      issuer: { certPem: readFileSync(ca.cert, 'utf8'), keyPem: readFileSync(ca.key, 'utf8') },
      revoked: serials.map((serialHex) => ({ serialHex, revokedAt: new Date('2026-11-26T00:00:00Z') })),
      thisUpdate: new Date('2026-11-26T00:00:00Z'),
      nextUpdate: new Date('2027-11-26T00:00:00Z'),
      crlNumber: 1,
    });

  it('refuses an enclave whose certificate the CRL revokes (openssl agrees)', async () => {
    const dir = extractFixture();
    const talkerSerial = inspectCertificate(readFileSync(join(dir, TALKER, 'cert.pem'), 'utf8')).serialHex;
    writeFileSync(join(dir, 'keystore/public/crl.pem'), crlFor(dir, [talkerSerial]));
    const r = await importArchive(pack(dir));
    assertRejected(r, new RegExp(`^enclave /talker_listener/talker: cert\\.pem \\(serial ${talkerSerial}\\) is revoked by public/crl\\.pem$`));
    assert.equal(r.problems.length, 1, r.problems.join('\n'));
    assert.throws(
      () => sh('openssl', ['verify', ...AT_NOW, '-crl_check', '-CAfile', 'keystore/public/ca.cert.pem', '-CRLfile', 'keystore/public/crl.pem', `${TALKER}/cert.pem`], dir),
      /certificate revoked/,
    );
    sh('openssl', ['verify', ...AT_NOW, '-crl_check', '-CAfile', 'keystore/public/ca.cert.pem', '-CRLfile', 'keystore/public/crl.pem', `${LISTENER}/cert.pem`], dir);
  });

  it('refuses a CRL signed by another CA', async () => {
    const dir = extractFixture();
    const other = makeCa(dir, 'other');
    writeFileSync(join(dir, 'keystore/public/crl.pem'), crlFor(dir, [], other));
    rmSync(other.key);
    rmSync(other.cert);
    assertRejected(await importArchive(pack(dir)), /^public\/crl\.pem is not signed by the identity CA$/);
  });

  it('returns a valid CRL, exports it to public/crl.pem + enclave crl.pem, and re-imports it', async () => {
    const dir = extractFixture();
    const crlPem = crlFor(dir, ['01AB']);
    writeFileSync(join(dir, 'keystore/public/crl.pem'), crlPem);
    const r = await importArchive(pack(dir));
    assert.deepEqual(r.problems, []);
    assert.equal(r.crlPem, crlPem);
    const out = join(tmp, `crl${++counter}`);
    mkdirSync(out);
    writeFileSync(join(out, 'k.tar.gz'), await writeTarGz(writeSros2Keystore(r.material!, { includeCaKeys: false }, { crlPem })));
    sh('tar', ['-xzf', 'k.tar.gz'], out);
    const talker = join(out, TALKER);
    sh('openssl', ['verify', ...AT_NOW, '-crl_check', '-CAfile', join(talker, 'identity_ca.cert.pem'), '-CRLfile', join(talker, 'crl.pem'), join(talker, 'cert.pem')]);
    const again = await importArchive(readFileSync(join(out, 'k.tar.gz')));
    assert.deepEqual(again.problems, []);
    assert.equal(again.crlPem, crlPem);
  });
});
