/**
 * Does Cyclone DDS 0.10 (Debian's, the project's DDS checker) enforce CRLs? Two per-robot identities for one
 * enclave path, made with plain openssl from one identity CA (same subject `CN=<path>`, different keys and
 * serials), pass the real DDS-Security pair check; once B's serial is on a CRL made by `openssl ca`, a peer
 * started with that crl.pem refuses B in the handshake, and B started with it refuses itself. A third identity
 * of the same subject that was not revoked still passes against the peer holding the CRL.
 * What this found is written down in docs/security.md ("Per-robot identities and CRLs in Cyclone DDS 0.10").
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { makeTempDir, opensslOk, SROS2_FIXTURES } from './helpers/openssl.js';
import { ddsPairCheck, ddsUnavailable } from './helpers/tools.js';

const ENCLAVE = '/fleet/amr/driver';
const DAY = 86_400_000;

describe('Cyclone DDS 0.10 and a CRL revoking one per-robot identity', { skip: ddsUnavailable() ?? false }, () => {
  let dir: string;
  const robot = (name: string): string => path.join(dir, `robot_${name}`);
  const serialOf = (name: string): string => opensslOk(['x509', '-in', path.join(robot(name), 'cert.pem'), '-noout', '-serial']).trim();
  const inDir = (args: string[]): string => opensslOk(args, { cwd: dir });

  before(() => {
    dir = makeTempDir('dds-crl-');
    inDir(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key.pem']);
    inDir(['req', '-x509', '-new', '-key', 'ca.key.pem', '-subj', '/CN=sros2CA', '-days', '30', '-sha256', '-out', 'ca.cert.pem', '-addext', 'basicConstraints=critical,CA:true']);
    inDir(['smime', '-sign', '-text', '-in', path.join(SROS2_FIXTURES, 'governance.default.xml'), '-signer', 'ca.cert.pem', '-inkey', 'ca.key.pem', '-out', 'governance.p7s']);
    // Permissions valid from a day before this test's clock to 20 days after, for the one subject all robots share.
    const stamp = (ms: number): string => new Date(ms).toISOString().slice(0, 19);
    const now = Date.now();
    const template = fs.readFileSync(path.join(SROS2_FIXTURES, 'expected-permissions/default_permissions_template.xml'), 'utf8');
    fs.writeFileSync(path.join(dir, 'permissions.xml'), template.replaceAll('@ENCLAVE@', ENCLAVE).replaceAll('@NB@', stamp(now - DAY)).replaceAll('@NA@', stamp(now + 20 * DAY)));
    inDir(['smime', '-sign', '-text', '-in', 'permissions.xml', '-signer', 'ca.cert.pem', '-inkey', 'ca.key.pem', '-out', 'permissions.p7s']);
    // An `openssl ca` database, so that revocation and the CRL are openssl's own.
    fs.mkdirSync(path.join(dir, 'db'));
    fs.writeFileSync(path.join(dir, 'db/index.txt'), '');
    fs.writeFileSync(path.join(dir, 'db/crlnumber'), '1000\n');
    fs.writeFileSync(
      path.join(dir, 'ca.cnf'),
      [
        '[ ca ]', 'default_ca = id', '[ id ]', 'database = db/index.txt', 'new_certs_dir = db', 'certificate = ca.cert.pem',
        'private_key = ca.key.pem', 'serial = db/serial', 'crlnumber = db/crlnumber', 'default_md = sha256', 'default_crl_days = 7',
        'policy = anything', 'unique_subject = no', 'copy_extensions = none', '[ anything ]', 'commonName = supplied',
        '[ leaf ]', 'basicConstraints = critical,CA:false', 'keyUsage = critical,digitalSignature,keyAgreement', '',
      ].join('\n'),
    );
    for (const name of ['A', 'B', 'C']) {
      inDir(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key.pem`]);
      inDir(['req', '-new', '-key', `${name}.key.pem`, '-subj', `/CN=${ENCLAVE.replaceAll('/', '\\/')}`, '-out', `${name}.csr`]);
      inDir(['ca', '-batch', '-config', 'ca.cnf', '-extensions', 'leaf', '-days', '20', '-rand_serial', '-notext', '-in', `${name}.csr`, '-out', `${name}.cert.pem`]);
      fs.mkdirSync(robot(name));
      for (const [to, from] of [['identity_ca.cert.pem', 'ca.cert.pem'], ['permissions_ca.cert.pem', 'ca.cert.pem'], ['governance.p7s', 'governance.p7s'], ['permissions.p7s', 'permissions.p7s'], ['cert.pem', `${name}.cert.pem`], ['key.pem', `${name}.key.pem`]]) {
        fs.copyFileSync(path.join(dir, from!), path.join(robot(name), to!));
      }
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('same subject, different serials and keys: the pair check passes between robot A and robot B', () => {
    const subjects = ['A', 'B', 'C'].map((n) => opensslOk(['x509', '-in', path.join(robot(n), 'cert.pem'), '-noout', '-subject', '-nameopt', 'RFC2253']).trim());
    assert.deepEqual(new Set(subjects), new Set([`subject=CN=${ENCLAVE}`]));
    assert.equal(new Set(['A', 'B', 'C'].map(serialOf)).size, 3);
    const pubs = ['A', 'B', 'C'].map((n) => opensslOk(['x509', '-in', path.join(robot(n), 'cert.pem'), '-noout', '-pubkey']));
    assert.equal(new Set(pubs).size, 3);
    const r = ddsPairCheck(robot('A'), robot('B'));
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /^OK: A='CN=\/fleet\/amr\/driver' and B='CN=\/fleet\/amr\/driver' authenticated/);
  });

  test("with B's serial on the CRL, a peer holding crl.pem refuses B; C (not revoked) still passes", () => {
    inDir(['ca', '-config', 'ca.cnf', '-revoke', 'B.cert.pem']);
    inDir(['ca', '-config', 'ca.cnf', '-gencrl', '-out', 'crl.pem']);
    const listed = opensslOk(['crl', '-in', path.join(dir, 'crl.pem'), '-noout', '-text']);
    assert.ok(listed.includes(`Serial Number: ${serialOf('B').replace('serial=', '')}`), listed);
    fs.copyFileSync(path.join(dir, 'crl.pem'), path.join(robot('A'), 'crl.pem'));

    const refused = ddsPairCheck(robot('A'), robot('B'));
    assert.equal(refused.status, 1, refused.out);
    assert.match(refused.out, /^FAIL: authentication handshake failed \(A rejected B\): .*certificate revoked/);

    const fine = ddsPairCheck(robot('A'), robot('C'));
    assert.equal(fine.status, 0, fine.out);
  });

  test('B started with the CRL that revokes it refuses its own identity', () => {
    fs.copyFileSync(path.join(dir, 'crl.pem'), path.join(robot('B'), 'crl.pem'));
    const r = ddsPairCheck(robot('C'), robot('B'));
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /^FAIL: enclave B .*participant creation failed.*certificate revoked/);
  });
});
