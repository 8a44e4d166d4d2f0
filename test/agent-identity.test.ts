/**
 * Per-robot enclave identities end to end: the real server (`server/main.ts serve`, HTTPS) and the real agent
 * on a real tmpfs. Robots A, B (agent `run`) and C (agent `exec` running a process) are bound to one
 * per-robot enclave. Each agent makes its own key in its runtime folder and gets its own certificate: same
 * subject, same CA, different serials and public keys; a real DDS-Security pair check (Cyclone DDS, tools/dds-check)
 * passes between A's and B's folders. An admin revokes C's identity: C's agent stops the process and purges;
 * A's and B's certificates stay byte-identical (only crl.pem changes), and A, started with that CRL, refuses
 * C's old material. B's identity revoked: its `run` agent removes the enclave, makes a new key and gets a new
 * certificate. A restarted gets a new key and serial.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Admin, serverBuilt, startServer, tearDownAgentTest, type RealServer } from './helpers/agent-server.js';
import { enrollAgent, exists, spawnAgent, shmDir, waitUntil, type AgentProc } from './helpers/agent-proc.js';
import { openssl } from './helpers/openssl.js';
import { ddsPairCheck, ddsUnavailable } from './helpers/tools.js';

const KS = 'perrobot';
const ENCLAVE = '/fleet/amr/driver';
const skip = serverBuilt() ? false : 'server not built yet';
const dds = ddsUnavailable();
const base = fs.mkdtempSync(join(tmpdir(), 'agent-identity-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
let server: RealServer;
let admin: Admin;

interface Robot {
  name: string;
  stateDir: string;
  rt: string;
}
const robots: Record<'A' | 'B' | 'C', Robot> = {} as Record<'A' | 'B' | 'C', Robot>;
const agents: Partial<Record<'A' | 'B' | 'C', AgentProc>> = {};

before(async () => {
  if (skip) return;
  server = await startServer({ dataDir: join(base, 'data') });
  admin = await Admin.login(server);
  await admin.createKeystore(KS, { identityMode: 'per-robot' });
  await admin.createEnclave(KS, ENCLAVE);
  for (const key of ['A', 'B', 'C'] as const) {
    const name = `id_robot_${key.toLowerCase()}`;
    await admin.createRobot(name);
    await admin.bind(KS, ENCLAVE, name);
    const stateDir = await enrollAgent({ base, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken(name) });
    const rt = shmDir('agent-identity');
    shm.push(rt);
    robots[key] = { name, stateDir, rt };
  }
});
after(() => tearDownAgentTest({ procs, admin, server, dirs: [base, ...shm] }));

function spawn(args: string[]): AgentProc {
  const p = spawnAgent(args);
  procs.push(p);
  return p;
}

function run(key: 'A' | 'B'): AgentProc {
  const r = robots[key];
  const p = spawn(['run', '--state-dir', r.stateDir, '--runtime-dir', r.rt, '--splay', '0', '--backoff-base', '0.2', '--backoff-max', '1']);
  agents[key] = p;
  return p;
}

const folder = (key: 'A' | 'B' | 'C', rt = robots[key].rt): string => join(rt, KS, 'enclaves', ENCLAVE);
const read = (key: 'A' | 'B' | 'C', file: string): string => fs.readFileSync(join(folder(key), file), 'utf8');
const cert = (key: 'A' | 'B' | 'C'): X509Certificate => new X509Certificate(read(key, 'cert.pem'));
/** The public half of a PEM private key, as openssl derives it (SPKI PEM). */
const spki = (pemKey: string): string => {
  const r = openssl(['pkey', '-pubout'], { input: pemKey });
  assert.equal(r.status, 0, r.out);
  return r.stdout;
};

async function identities(robot: string): Promise<{ keystore: string; enclave: string; serial: string; status: string }[]> {
  return (await admin.call<{ identities: { keystore: string; enclave: string; serial: string; status: string }[] }>('GET', `/v1/robots/${robot}/identities`)).identities;
}

async function waitForCert(key: 'A' | 'B' | 'C', what: string, ok: () => boolean = () => true): Promise<void> {
  const ready = (): boolean => {
    try {
      return exists(join(folder(key), 'cert.pem')) && exists(join(folder(key), 'key.pem')) && ok();
    } catch (err) {
      // A revoked identity's files are removed while the agent gets its new one: seen a moment ago, gone by the read.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  };
  await waitUntil(what, ready, 20_000).catch((err: Error) => {
    throw new Error(`${err.message}; agent stderr:\n${agents[key]?.stderr() ?? ''}`);
  });
}

describe('per-robot identities with the real server and agent', { skip }, () => {
  test('two robots get their own key (0600, tmpfs) and certificate: same subject and CA, different serials and keys', async () => {
    run('A');
    run('B');
    await waitForCert('A', "A's identity");
    await waitForCert('B', "B's identity");
    const [a, b] = [cert('A'), cert('B')];
    assert.equal(a.subject, `CN=${ENCLAVE}`);
    assert.equal(b.subject, a.subject);
    assert.equal(a.issuer, b.issuer);
    assert.notEqual(a.serialNumber, b.serialNumber);
    assert.notEqual(spki(read('A', 'key.pem')), spki(read('B', 'key.pem')));
    for (const key of ['A', 'B'] as const) {
      // The key beside the certificate is the one it certifies, and the certificate chains to the bundle's CA.
      assert.equal(spki(read(key, 'key.pem')), cert(key).publicKey.export({ type: 'spki', format: 'pem' }));
      const v = openssl(['verify', '-CAfile', join(folder(key), 'identity_ca.cert.pem'), join(folder(key), 'cert.pem')]);
      assert.equal(v.status, 0, v.out);
      assert.equal(fs.statSync(join(folder(key), 'key.pem')).mode & 0o777, 0o600);
      assert.deepEqual(fs.readdirSync(folder(key)).sort().filter((f) => f !== 'crl.pem'), [
        'cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions_ca.cert.pem',
      ]);
      // The agent names files, never their content.
      assert.doesNotMatch(agents[key]!.stderr(), /PRIVATE KEY|BEGIN CERTIFICATE/);
      await agents[key]!.waitForLog(new RegExp(`identity for ${KS}:${ENCLAVE} issued: serial ${cert(key).serialNumber.toLowerCase()}`));
      // The server holds the robot's identity, with the serial in the certificate.
      const held = await identities(robots[key].name);
      assert.deepEqual(held.map((i) => [i.keystore, i.enclave, i.serial, i.status]), [[KS, ENCLAVE, cert(key).serialNumber.toLowerCase(), 'live']]);
    }
  });

  test('the DDS-Security pair check passes between robot A and robot B', { skip: dds ?? false }, () => {
    const r = ddsPairCheck(folder('A'), folder('B'));
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, new RegExp(`^OK: A='CN=${ENCLAVE}' and B='CN=${ENCLAVE}' authenticated`));
  });

  test("an admin revokes C's identity: its exec agent stops the process and purges; A and B keep their certificate bytes", async () => {
    const c = robots.C;
    const pidFile = join(base, 'c.pid');
    const p = spawn(['exec', '--state-dir', c.stateDir, '--runtime-dir', c.rt, '--enclave', `${KS}:${ENCLAVE}`, '--backoff-max', '1', '--', 'sh', '-c', `echo $$ > ${pidFile}; exec sleep 300`]);
    agents.C = p;
    await waitForCert('C', "C's identity");
    await waitUntil('COMMAND started', () => exists(pidFile) && fs.readFileSync(pidFile, 'utf8').endsWith('\n'), 15_000);
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    // C's material as it was, for the DDS check below (a copy on tmpfs).
    const stolen = shmDir('agent-identity-c');
    shm.push(stolen);
    for (const f of fs.readdirSync(folder('C'))) fs.copyFileSync(join(folder('C'), f), join(stolen, f));
    const before = { A: read('A', 'cert.pem'), B: read('B', 'cert.pem'), keyA: read('A', 'key.pem') };
    const serialC = cert('C').serialNumber.toLowerCase();

    await admin.call('DELETE', `/v1/robots/${c.name}/identities/${KS}/${serialC}`);
    const { code } = await p.exited;
    assert.equal(code, 3, p.stderr());
    assert.match(p.stderr(), new RegExp(`identity for ${KS}:${ENCLAVE} \\(serial ${serialC}\\) was revoked: stopping sh`));
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the process C ran is gone');
    assert.deepEqual(fs.readdirSync(c.rt), [], "C's runtime folder is empty");
    assert.equal((await identities(c.name))[0]!.status, 'revoked');

    // A and B: the CRL now lists C's serial; their certificate and key bytes did not change.
    await waitUntil("the CRL in A's and B's folders", () => ['A', 'B'].every((k) => exists(join(folder(k as 'A'), 'crl.pem')) && read(k as 'A', 'crl.pem').length > 0 && crlSerials(read(k as 'A', 'crl.pem')).includes(serialC)), 10_000);
    assert.equal(read('A', 'cert.pem'), before.A);
    assert.equal(read('B', 'cert.pem'), before.B);
    assert.equal(read('A', 'key.pem'), before.keyA);
    await agents.A!.waitForLog(new RegExp(`enclave ${KS}:${ENCLAVE} updated: crl\\.pem (added|changed) \\(crl\\.pem\\)`));

    if (dds) return; // the DDS half needs Cyclone DDS
    const refused = ddsPairCheck(folder('A'), stolen);
    assert.equal(refused.status, 1, refused.out);
    assert.match(refused.out, /^FAIL: authentication handshake failed \(B rejected A; A rejected B|^FAIL: .*certificate revoked/);
  });

  test("B's identity revoked: its run agent removes the enclave, makes a new key and gets a new certificate", async () => {
    const oldSerial = cert('B').serialNumber.toLowerCase();
    const oldKey = read('B', 'key.pem');
    const certA = read('A', 'cert.pem');
    await admin.call('DELETE', `/v1/robots/${robots.B.name}/identities/${KS}/${oldSerial}`);
    await waitForCert('B', "B's new identity", () => cert('B').serialNumber.toLowerCase() !== oldSerial);
    assert.notEqual(read('B', 'key.pem'), oldKey);
    // The files can be in place before the log lines have come through the pipe.
    await agents.B!.waitForLog(new RegExp(`identity for ${KS}:${ENCLAVE} \\(serial ${oldSerial}\\) was revoked: enclave removed, key discarded`));
    await agents.B!.waitForLog(new RegExp(`identity for ${KS}:${ENCLAVE} issued: serial ${cert('B').serialNumber.toLowerCase()}`));
    assert.equal(read('A', 'cert.pem'), certA);
    const held = await identities(robots.B.name);
    assert.deepEqual(held.map((i) => i.status).sort(), ['live', 'revoked']);
  });

  test('A restarted (empty runtime folder) makes a new key and gets a new serial', async () => {
    const oldSerial = cert('A').serialNumber.toLowerCase();
    const oldKey = read('A', 'key.pem');
    agents.A!.child.kill('SIGTERM');
    assert.equal((await agents.A!.exited).code, 0);
    assert.ok(!exists(join(robots.A.rt, KS)), 'purged on stop');
    run('A');
    await waitForCert('A', "A's identity after the restart");
    assert.notEqual(cert('A').serialNumber.toLowerCase(), oldSerial);
    assert.notEqual(read('A', 'key.pem'), oldKey);
    const statuses = Object.fromEntries((await identities(robots.A.name)).map((i) => [i.serial, i.status]));
    assert.equal(statuses[cert('A').serialNumber.toLowerCase()], 'live');
    assert.notEqual(statuses[oldSerial], 'live');
    await agents.A!.waitForLog(/identity for .* issued: serial/);
    // Whatever happened, no agent wrote key or certificate material to its log.
    for (const p of Object.values(agents)) assert.doesNotMatch(p!.stderr(), /PRIVATE KEY|BEGIN CERTIFICATE|BEGIN/);
  });
});

/** Serials (lowercase hex) a PEM CRL lists, read by openssl. */
function crlSerials(pem: string): string[] {
  const r = openssl(['crl', '-noout', '-text'], { input: pem });
  return [...r.stdout.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.toLowerCase());
}
