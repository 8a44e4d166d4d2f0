/**
 * Enclaves built only with server/pki, checked by a real DDS-Security implementation (Cyclone DDS
 * 0.10 through dds-pair-check.sh): PKI-DH handshake, access control, protected traffic, plus the
 * script's strict openssl checks.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { generateKeyPair, issueCertificate, signSmime, type KeyPair } from '../server/pki/index.js';
import { SROS2_FIXTURES, extractSros2Keystore, makeTempDir } from './helpers/openssl.js';
import { DDS_PAIR_CHECK, ddsUnavailable } from './helpers/tools.js';

const unavailable = ddsUnavailable();
const DAY = 86_400_000;
const NOT_BEFORE = new Date(Math.floor((Date.now() - DAY) / 1000) * 1000);
const NOT_AFTER = new Date(NOT_BEFORE.getTime() + 30 * DAY);
const GOVERNANCE_XML = fs.readFileSync(path.join(SROS2_FIXTURES, 'governance.default.xml'), 'utf8');
const PERMISSIONS_TEMPLATE = fs.readFileSync(path.join(SROS2_FIXTURES, 'expected-permissions/default_permissions_template.xml'), 'utf8');

interface Ca {
  keyPem: string;
  certPem: string;
}
let dir: string;

function makeCa(): Ca {
  const keys = generateKeyPair();
  const certPem = issueCertificate({
    subjectCN: 'sros2CA',
    publicKeyPem: keys.publicKeyPem,
    issuer: { keyPem: keys.privateKeyPem },
    notBefore: NOT_BEFORE,
    notAfter: new Date(NOT_BEFORE.getTime() + 3650 * DAY),
    profile: 'ca',
  });
  return { keyPem: keys.privateKeyPem, certPem };
}

/** sros2's allow-all permissions for one enclave, validity = the certificate's. */
function allowAllPermissions(enclave: string): string {
  const stamp = (d: Date) => d.toISOString().slice(0, 19);
  return PERMISSIONS_TEMPLATE.replaceAll('@ENCLAVE@', enclave).replaceAll('@NB@', stamp(NOT_BEFORE)).replaceAll('@NA@', stamp(NOT_AFTER));
}

/** Writes the six runtime files of an enclave, as a robot would receive them. */
function writeEnclave(
  name: string,
  enclave: string,
  identityCa: Ca,
  permissionsCa: Ca,
  governanceP7s = signSmime(GOVERNANCE_XML, permissionsCa),
): string {
  const keys: KeyPair = generateKeyPair();
  const cert = issueCertificate({
    subjectCN: enclave,
    publicKeyPem: keys.publicKeyPem,
    issuer: { certPem: identityCa.certPem, keyPem: identityCa.keyPem },
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    profile: 'enclave',
  });
  const folder = path.join(dir, name);
  fs.mkdirSync(folder, { recursive: true });
  const files: Record<string, string> = {
    'identity_ca.cert.pem': identityCa.certPem,
    'permissions_ca.cert.pem': permissionsCa.certPem,
    'cert.pem': cert,
    'key.pem': keys.privateKeyPem,
    'governance.p7s': governanceP7s,
    'permissions.p7s': signSmime(allowAllPermissions(enclave), permissionsCa),
  };
  for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(folder, file), content, { mode: 0o600 });
  return folder;
}

function pairCheck(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number; out: string }> {
  return new Promise((resolve) => {
    execFile('bash', [DDS_PAIR_CHECK, ...args], { timeout: 120_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      const status = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ status, out: `${stdout}${stderr}`.trim() });
    });
  });
}

describe('dds-pair-check with enclaves from server/pki', { skip: unavailable ?? false, concurrency: true }, () => {
  let ca: Ca;
  before(() => {
    dir = makeTempDir('pki-dds-');
    ca = makeCa();
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('two enclaves of one CA talk to each other', { timeout: 180_000 }, async (t) => {
    const governance = signSmime(GOVERNANCE_XML, ca);
    const a = writeEnclave('one-ca/a', '/pki_test/robot_a', ca, ca, governance);
    const b = writeEnclave('one-ca/b', '/pki_test/robot_b', ca, ca, governance);
    const r = await pairCheck([a, b]);
    t.diagnostic(r.out);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /^OK: /m);
  });

  test('split identity and permissions CAs work too', { timeout: 180_000 }, async (t) => {
    const identity = makeCa();
    const permissions = makeCa();
    const a = writeEnclave('split/a', '/pki_test/split_a', identity, permissions);
    const b = writeEnclave('split/b', '/pki_test/split_b', identity, permissions);
    const r = await pairCheck([a, b]);
    t.diagnostic(r.out);
    assert.equal(r.status, 0, r.out);
  });

  test('an enclave issued under the real sros2 CA talks to the sros2-made talker', { timeout: 180_000 }, async (t) => {
    const keystore = extractSros2Keystore(makeTempDir('pki-dds-sros2-'));
    try {
      const sros2Ca: Ca = {
        keyPem: fs.readFileSync(path.join(keystore, 'private/ca.key.pem'), 'utf8'),
        certPem: fs.readFileSync(path.join(keystore, 'public/ca.cert.pem'), 'utf8'),
      };
      // sros2's own governance.p7s, our certificate and permissions
      const ours = writeEnclave('sros2/listener', '/talker_listener/our_listener', sros2Ca, sros2Ca, fs.readFileSync(path.join(keystore, 'enclaves/governance.p7s'), 'utf8'));
      const talker = path.join(keystore, 'enclaves/talker_listener/talker');
      const r = await pairCheck(['-T', 'rt/chatter', '--roles', 'sub,pub', ours, talker]);
      t.diagnostic(r.out);
    assert.equal(r.status, 0, r.out);
    } finally {
      fs.rmSync(path.dirname(keystore), { recursive: true, force: true });
    }
  });

  test('a peer that crashes (a bug in the DDS library) gets one more run, and that run decides', { timeout: 180_000 }, async (t) => {
    const governance = signSmime(GOVERNANCE_XML, ca);
    const a = writeEnclave('crash/a', '/pki_test/crash_a', ca, ca, governance);
    const b = writeEnclave('crash/b', '/pki_test/crash_b', ca, ca, governance);
    // The script builds the real peer into this cache; a wrapper around it then dies of SIGSEGV at B's first
    // start, as a Cyclone DDS peer once did in CI, and is the real peer at every other start.
    const cache = path.join(dir, 'crash/cache');
    const built = await pairCheck([a, b], { DDS_PAIR_CHECK_CACHE: cache });
    assert.equal(built.status, 0, built.out);
    const wrapper = path.join(dir, 'crash/peer.sh');
    fs.writeFileSync(
      wrapper,
      `#!/bin/bash\ncase " $* " in *" --name B "*) if mkdir "${dir}/crash/crashed" 2>/dev/null; then ulimit -c 0; kill -SEGV $$; fi ;; esac\nexec "${cache}/cyclone_secure_peer" "$@"\n`,
      { mode: 0o755 },
    );
    const r = await pairCheck([a, b], { CYCLONE_PEER: wrapper });
    t.diagnostic(r.out);
    assert.ok(fs.existsSync(path.join(dir, 'crash/crashed')), 'B crashed once');
    assert.match(r.out, /a DDS peer crashed \(exit A=\S+ B=139\)/);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /^OK: /m);
  });

  test('an enclave from a different CA is refused', { timeout: 180_000 }, async (t) => {
    const a = writeEnclave('foreign/a', '/pki_test/robot_a', ca, ca);
    const other = makeCa(); // also named CN=sros2CA: only the keys differ
    const b = writeEnclave('foreign/b', '/pki_test/robot_b', other, other);
    const r = await pairCheck(['-t', '10', a, b]);
    t.diagnostic(r.out);
    assert.equal(r.status, 1, r.out);
    assert.match(r.out, /^FAIL: (authentication handshake failed|participants never authenticated)/m);
  });
});
