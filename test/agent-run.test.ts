/**
 * `enclave-agent enroll`, `run`, `status` and `purge` as real processes against the real server
 * (`server/main.ts serve` as a child process, HTTPS with its own CA, driven through its HTTP API), writing
 * real enclaves to a real tmpfs. One server is shared by the tests that leave it running; the tests that
 * stop, restart or reconfigure a server get their own.
 */
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeTestCa } from './helpers/agent-tls.js';
import { shiftedClockEnv } from './helpers/agent-clock.js';
import { datedKeystoreArchive } from './helpers/agent-keystore.js';
import { serverFixture, waitForReport, type Admin, type ServerFixture } from './helpers/agent-server.js';
import { enrollAgent, exists, listTree, runAgent, shmDir, spawnAgent, waitUntil, type AgentProc } from './helpers/agent-proc.js';

const base = fs.mkdtempSync(join(tmpdir(), 'agent-run-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
const servers: ServerFixture[] = [];
let fx: ServerFixture;
let robotSeq = 0;
let dirSeq = 0;

before(async () => {
  fx = await serverFixture({ dataDir: join(base, 'data') });
});
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  for (const s of [fx, ...servers]) await s?.stop().catch(() => undefined);
  fs.rmSync(base, { recursive: true, force: true });
  for (const d of shm) fs.rmSync(d, { recursive: true, force: true });
});

function runtimeDir(): string {
  const d = shmDir('agent-run');
  shm.push(d);
  return d;
}

/** A server of its own (for tests that stop, restart or reconfigure it). */
async function ownServer(opts: { env?: NodeJS.ProcessEnv } = {}): Promise<ServerFixture> {
  const s = await serverFixture({ dataDir: join(base, `data-${++dirSeq}`), ...opts });
  servers.push(s);
  return s;
}

/** Creates the keystores and enclaves that do not exist yet (`KS:/path`). */
async function enclaves(admin: Admin, ids: string[], keystoreOpts: Record<string, unknown> = {}): Promise<void> {
  const have = new Set(((await admin.call<{ keystores: { name: string }[] }>('GET', '/v1/keystores')).keystores).map((k) => k.name));
  for (const id of ids) {
    const [ks, path] = id.split(':') as [string, string];
    if (!have.has(ks)) {
      await admin.createKeystore(ks, keystoreOpts);
      have.add(ks);
    }
    const list = (await admin.call<{ enclaves: { path: string }[] }>('GET', `/v1/keystores/${ks}/enclaves`)).enclaves;
    if (!list.some((e) => e.path === path)) await admin.createEnclave(ks, path);
  }
}

/** A robot on `s` with `bind` (`KS:/path`, created as needed) bound, enrolled by the agent CLI. */
async function newRobot(bind: string[] = [], s: ServerFixture = fx): Promise<{ robot: string; stateDir: string; bindings: Map<string, string> }> {
  const robot = `robot_${++robotSeq}`;
  await s.admin.createRobot(robot, { site: 'test' });
  await enclaves(s.admin, bind);
  const bindings = new Map<string, string>();
  for (const id of bind) {
    const [ks, path] = id.split(':') as [string, string];
    bindings.set(id, await s.admin.bind(ks, path, robot));
  }
  const stateDir = await enrollAgent({ base, server: s.server.url, caFile: s.server.caFile, token: await s.admin.enrollmentToken(robot) });
  return { robot, stateDir, bindings };
}

function run(stateDir: string, runtime: string, extra: string[] = [], env?: NodeJS.ProcessEnv): AgentProc {
  const p = spawnAgent(['run', '--state-dir', stateDir, '--runtime-dir', runtime, '--splay', '0', '--backoff-base', '0.2', '--backoff-max', '1', ...extra], { env });
  procs.push(p);
  return p;
}

const enclaveDir = (runtime: string, ks: string, path: string): string => join(runtime, ks, 'enclaves', path);
const keyOf = (runtime: string, ks: string, path: string): string => join(enclaveDir(runtime, ks, path), 'key.pem');
const certOf = (runtime: string, ks: string, path: string): string => fs.readFileSync(join(enclaveDir(runtime, ks, path), 'cert.pem'), 'utf8');
const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber.toUpperCase();

describe('agent enroll', () => {
  test('creates the device key 0600 in a 0700 state folder and saves server, robot and CA', async () => {
    await fx.admin.createRobot('enroll_1', { site: 'tokyo' });
    const token = await fx.admin.enrollmentToken('enroll_1');
    const stateDir = join(base, 'enroll-1');
    const caFile = fx.server.caFile!;
    const r = await runAgent(['enroll', '--server', fx.server.url, '--ca', caFile, '--token', token, '--state-dir', stateDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /enrolled as robot enroll_1 \(site=tokyo\)/);
    assert.equal(fs.statSync(stateDir).mode & 0o777, 0o700);
    const keyPath = join(stateDir, 'device.key.pem');
    assert.equal(fs.statSync(keyPath).mode & 0o777, 0o600);
    const key = createPrivateKey(fs.readFileSync(keyPath));
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.match(fs.readFileSync(keyPath, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(fs.readFileSync(join(stateDir, 'ca.pem'), 'utf8'), fs.readFileSync(caFile, 'utf8'));
    const state = JSON.parse(fs.readFileSync(join(stateDir, 'state.json'), 'utf8'));
    assert.equal(state.server, fx.server.url);
    assert.equal(state.robot, 'enroll_1');
    assert.deepEqual(fs.readdirSync(stateDir).sort(), ['ca.pem', 'device.key.pem', 'state.json']);
    assert.ok(!r.stderr.includes(token), 'the token is never logged');
    // The server holds the public half of exactly this key.
    const robot = await fx.admin.getRobot<{ enrolled: boolean; keyFingerprint: string }>('enroll_1');
    assert.equal(robot.enrolled, true);
    const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
    assert.equal(robot.keyFingerprint, createHash('sha256').update(spki).digest('hex'), 'the server holds this key');

    await fx.admin.createRobot('enroll_2');
    const again = await runAgent(['enroll', '--server', fx.server.url, '--ca', caFile, '--token', await fx.admin.enrollmentToken('enroll_2'), '--state-dir', stateDir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already enrolled as robot enroll_1 .*--force/);
    assert.equal(fs.readFileSync(keyPath, 'utf8'), key.export({ type: 'pkcs8', format: 'pem' }), 'key untouched');
    assert.equal((await fx.admin.getRobot<{ enrolled: boolean }>('enroll_2')).enrolled, false, 'the server was not asked');

    await fx.admin.createRobot('enroll_3');
    const forced = await runAgent(['enroll', '--force', '--server', fx.server.url, '--ca', caFile, '--token', await fx.admin.enrollmentToken('enroll_3'), '--state-dir', stateDir]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(fs.readFileSync(keyPath, 'utf8'), key.export({ type: 'pkcs8', format: 'pem' }), 'new key');
    assert.equal(JSON.parse(fs.readFileSync(join(stateDir, 'state.json'), 'utf8')).robot, 'enroll_3');
    const newSpki = createPublicKey(createPrivateKey(fs.readFileSync(keyPath))).export({ type: 'spki', format: 'der' });
    assert.ok(!newSpki.equals(spki));
    const enroll3 = await fx.admin.getRobot<{ keyFingerprint: string }>('enroll_3');
    assert.equal(enroll3.keyFingerprint, createHash('sha256').update(newSpki).digest('hex'));
  });

  test('a used or invalid token is refused (exit 3) and leaves no enrollment', async () => {
    await fx.admin.createRobot('enroll_used');
    const token = await fx.admin.enrollmentToken('enroll_used');
    await enrollAgent({ base, server: fx.server.url, caFile: fx.server.caFile, token });
    const stateDir = join(base, 'enroll-used');
    const r = await runAgent(['enroll', '--server', fx.server.url, '--ca', fx.server.caFile!, '--token', token, '--state-dir', stateDir]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /enrollment refused: enrollment token is invalid, expired or already used/);
    assert.deepEqual(fs.readdirSync(stateDir), []);
    const bogus = await runAgent(['enroll', '--server', fx.server.url, '--ca', fx.server.caFile!, '--token', 'not-a-token', '--state-dir', stateDir]);
    assert.equal(bogus.code, 3);
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });

  test('a server whose certificate is not from the pinned CA is refused', async () => {
    const other = makeTestCa(join(base, 'other-ca'), 'other-ca');
    await fx.admin.createRobot('enroll_ca');
    const stateDir = join(base, 'enroll-wrong-ca');
    const r = await runAgent(['enroll', '--server', fx.server.url, '--ca', other.caFile, '--token', await fx.admin.enrollmentToken('enroll_ca'), '--state-dir', stateDir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /TLS: the server certificate is not signed by the pinned CA/);
    assert.ok(!exists(join(stateDir, 'state.json')));
    assert.equal((await fx.admin.getRobot<{ enrolled: boolean }>('enroll_ca')).enrolled, false);
    const noCa = await runAgent(['enroll', '--server', fx.server.url, '--token', 'x', '--state-dir', stateDir]);
    assert.equal(noCa.code, 2);
    assert.match(noCa.stderr, /needs its CA certificate \(--ca FILE\)/);
  });
});

describe('agent run', () => {
  test('pulls and writes enclaves, reports, shows status, purges on SIGTERM and exits 0', async () => {
    const { robot, stateDir } = await newRobot(['fleet:/fleet/r/driver', 'fleet:/fleet/r/nav', 'lab:/cam']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready: holding 3 enclave\(s\) in 2 keystore\(s\)/, 15_000);
    const nav = await fx.admin.getEnclave('fleet', '/fleet/r/nav');
    assert.equal(certOf(rt, 'fleet', '/fleet/r/nav').trim(), nav.certificate.trim(), 'the certificate the server issued');
    const cam = enclaveDir(rt, 'lab', '/cam');
    assert.equal(fs.statSync(join(cam, 'key.pem')).mode & 0o777, 0o600);
    const camKey = createPublicKey(createPrivateKey(fs.readFileSync(join(cam, 'key.pem')))).export({ type: 'spki', format: 'pem' });
    assert.equal(camKey, new X509Certificate(fs.readFileSync(join(cam, 'cert.pem'))).publicKey.export({ type: 'spki', format: 'pem' }), 'key matches cert');

    const report = await waitForReport(fx.admin, robot, (r) => r.enclaves.length === 3);
    assert.equal(report.filesystem, 'tmpfs');
    assert.equal(typeof report.clockSkewMs, 'number');
    assert.ok(Math.abs(report.clockSkewMs) < 2000, `same host, skew ${report.clockSkewMs} ms`);
    assert.match(String(report.agentVersion), /^\d+\.\d+\.\d+/);
    assert.deepEqual(report.enclaves.map((e) => `${e.keystore}:${e.path}`).sort(), ['fleet:/fleet/r/driver', 'fleet:/fleet/r/nav', 'lab:/cam']);

    const driver = await fx.admin.getEnclave('fleet', '/fleet/r/driver');
    const status = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(status.code, 0);
    assert.match(status.stdout, new RegExp(`robot ${robot} at .*: running \\(pid ${p.child.pid}\\), ready`));
    assert.match(status.stdout, new RegExp(`fleet\\s+/fleet/r/driver\\s+${driver.notAfter.replace(/\./g, '\\.')} \\(in 36[45] d\\)`));
    const json = JSON.parse((await runAgent(['status', '--json', '--runtime-dir', rt])).stdout);
    assert.equal(json.running, true);
    assert.equal(json.ready, true);
    assert.equal(json.enclaves.length, 3);
    assert.equal(json.revision, report.revision);

    p.child.kill('SIGTERM');
    const { code } = await p.exited;
    assert.equal(code, 0);
    assert.deepEqual(listTree(rt), [], 'runtime folder purged');
    assert.match(p.stderr(), /SIGTERM: removing enclaves and stopping/);
    assert.ok(!/BEGIN|PRIVATE KEY|Bearer/.test(p.stderr()), 'no key or token in the logs');
  });

  test('SIGINT also purges; after SIGKILL the next start removes the stale tree', async () => {
    const { robot, stateDir, bindings } = await newRobot(['stale:/a']);
    const rt = runtimeDir();
    const p1 = run(stateDir, rt);
    await p1.waitForLog(/ready/, 15_000);
    p1.child.kill('SIGKILL');
    await p1.exited;
    assert.ok(exists(keyOf(rt, 'stale', '/a')), 'SIGKILL leaves the tree behind');

    await enclaves(fx.admin, ['stale:/b']);
    await fx.admin.bind('stale', '/b', robot);
    await fx.admin.unbind(bindings.get('stale:/a')!);
    const p2 = run(stateDir, rt);
    await p2.waitForLog(/ready/, 15_000);
    assert.match(p2.stderr(), /removed 1 keystore\(s\) left in .* by an earlier run/);
    assert.ok(!exists(join(rt, 'stale/enclaves/a')), 'stale enclave removed');
    assert.equal(fs.readdirSync(rt).filter((n) => n.startsWith('.stale.')).length, 1, 'one generation: the new one');
    assert.ok(exists(keyOf(rt, 'stale', '/b')));
    p2.child.kill('SIGINT');
    assert.equal((await p2.exited).code, 0);
    assert.deepEqual(listTree(rt), []);
  });

  test('rotation, revocation and unbinding reach the files within a second', async () => {
    const { robot, stateDir, bindings } = await newRobot(['rot:/a', 'rot:/b']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    const first = await waitForReport(fx.admin, robot, (r) => r.enclaves.length === 2);

    const before = serialOf(certOf(rt, 'rot', '/a'));
    await fx.admin.rotate('rot', '/a');
    const { serial } = await fx.admin.getEnclave('rot', '/a');
    const rotated = await waitUntil('rotation', () => serialOf(certOf(rt, 'rot', '/a')) === serial.toUpperCase(), 3000);
    assert.notEqual(serial.toUpperCase(), before);
    assert.ok(rotated < 1000, `rotation applied in ${rotated} ms`);
    // The server keeps the last report only: each change must show up there.
    await waitForReport(fx.admin, robot, (r) => r.revision !== first.revision && r.enclaves.length === 2);

    await fx.admin.revoke('rot', '/b');
    const revoked = await waitUntil('revocation', () => !exists(enclaveDir(rt, 'rot', '/b')), 3000);
    assert.ok(revoked < 1000, `revocation applied in ${revoked} ms`);
    assert.ok(exists(keyOf(rt, 'rot', '/a')));
    await waitUntil('the CRL next to the enclave left', () => exists(join(enclaveDir(rt, 'rot', '/a'), 'crl.pem')), 3000);
    const report = await waitForReport(fx.admin, robot, (r) => r.enclaves.length === 1);
    assert.deepEqual(report.enclaves.map((e) => e.path), ['/a']);

    await fx.admin.unbind(bindings.get('rot:/a')!);
    const unbound = await waitUntil('last enclave removed', () => !exists(join(rt, 'rot')), 3000);
    assert.ok(unbound < 1000, `unbinding applied in ${unbound} ms`);
    await waitForReport(fx.admin, robot, (r) => r.enclaves.length === 0);
    // Each update says what changed in the files written: the rotation gives /a a new certificate and key (and
    // a freshly signed permissions.p7s); revoking /b changes nothing of /a but the CRL that now lists /b.
    assert.match(p.stderr(), /enclave rot:\/a updated: certificate rotated(, permissions changed)? \(cert\.pem, key\.pem(, permissions\.p7s)?\)\n/);
    assert.match(p.stderr(), /enclave rot:\/a updated: crl\.pem added \(crl\.pem\)\n/);
    assert.equal(p.stderr().match(/certificate rotated/g)?.length, 1, 'one rotation, one "certificate rotated"');
    assert.ok(!/\(rotated\)/.test(p.stderr()));
    assert.match(p.stderr(), /enclave rot:\/b removed \(revoked or unbound\)/);
    assert.match(p.stderr(), /enclave rot:\/a removed \(revoked or unbound\)/);
    assert.equal(p.child.exitCode, null, 'still running, waiting for a binding');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('a deleted robot is purged and the agent fails with exit 3', async () => {
    const { robot, stateDir } = await newRobot(['doomed:/a']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    await fx.admin.deleteRobot(robot);
    const { code } = await waitExit(p, 10_000);
    assert.equal(code, 3, p.stderr());
    assert.match(p.stderr(), /the server refused this device .*revoked or deleted/);
    assert.deepEqual(listTree(rt), []);
  });

  test('expiring tokens (ENCLAVE_ROBOT_TOKEN_TTL_SECONDS=2) are renewed with fresh assertions; changes keep arriving', async () => {
    const s = await ownServer({ env: { ENCLAVE_ROBOT_TOKEN_TTL_SECONDS: '2' } });
    const { robot, stateDir } = await newRobot(['ks:/a'], s);
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--poll-wait', '1']);
    await p.waitForLog(/ready/, 15_000);
    const logins = await s.admin.robotLogins(robot);
    assert.ok(logins >= 1);
    await new Promise((r) => setTimeout(r, 3000)); // longer than a token lives
    await s.admin.rotate('ks', '/a');
    const { serial } = await s.admin.getEnclave('ks', '/a');
    await waitUntil('rotation after the first token expired', () => serialOf(certOf(rt, 'ks', '/a')) === serial.toUpperCase(), 5000);
    const later = await s.admin.robotLogins(robot);
    assert.ok(later >= logins + 2, `logins: ${logins} at ready, ${later} after 3 s (each a new assertion: the server refuses a reused jti)`);
    assert.ok(!/refused|retrying/.test(p.stderr()), p.stderr());
    assert.equal(p.child.exitCode, null, 'still running');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('with a fleet waiting (ENCLAVE_REPORTS_LATER_FROM=1 here), a new bundle is reported on the next contact, not at once', async () => {
    const s = await ownServer({ env: { ENCLAVE_REPORTS_LATER_FROM: '1' } });
    const first = await newRobot(['ks:/a'], s);
    const a = run(first.stateDir, runtimeDir(), ['--poll-wait', '30']);
    await a.waitForLog(/ready/, 15_000);
    // Nobody was waiting when it booted: reported at once. It now waits in a 30 s poll.
    await waitForReport(s.admin, first.robot, (r) => r.enclaves.length === 1);

    const second = await newRobot(['ks:/a'], s);
    const b = run(second.stateDir, runtimeDir(), ['--poll-wait', '3']);
    await b.waitForLog(/ready/, 15_000);
    const readyAt = Date.now();
    assert.equal(await s.admin.report(second.robot), null, 'the bundle came while a robot waited: no report yet');
    const report = await waitForReport(s.admin, second.robot, (r) => r.enclaves.length === 1, 15_000);
    const after = Date.now() - readyAt;
    assert.ok(after >= 2000, `reported ${after} ms after ready: when its first 3 s poll was answered`);
    assert.match(report.revision ?? '', /^[A-Za-z0-9]+$/);
    assert.ok(!/report not sent/.test(b.stderr()), b.stderr());
    for (const p of [a, b]) {
      p.child.kill('SIGTERM');
      assert.equal((await p.exited).code, 0);
    }
  });

  test('a token the server no longer accepts (restarted with a new signing key) is answered 401; the agent logs in again', async () => {
    const s = await ownServer();
    const { robot, stateDir } = await newRobot(['ks:/a'], s);
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-base', '0.1', '--backoff-max', '1']);
    await p.waitForLog(/ready/, 15_000);
    const logins = await s.admin.robotLogins(robot);
    await s.stop();
    fs.rmSync(join(s.server.dataDir, 'jwt.secret')); // every token issued so far is now invalid
    await s.restart();
    await waitUntil('a refused bundle request', () => /"path":"\/v1\/robot\/bundle"[^\n]*"status":401/.test(s.server.output()), 10_000);
    await s.admin.rotate('ks', '/a');
    const { serial } = await s.admin.getEnclave('ks', '/a');
    await waitUntil('rotation after the new login', () => serialOf(certOf(rt, 'ks', '/a')) === serial.toUpperCase(), 5000);
    assert.ok((await s.admin.robotLogins(robot)) > logins, 'logged in again');
    assert.ok(!/refused this device/.test(p.stderr()));
    assert.equal(p.child.exitCode, null, 'still running');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
    assert.deepEqual(listTree(rt), []);
  });

  test('server down at start: retries with jittered backoff, never ready before enclaves, then catches up', async () => {
    const s = await ownServer();
    const port = s.server.port;
    const { stateDir } = await newRobot(['ks:/late'], s);
    await s.stop();
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-base', '0.1', '--backoff-max', '1']);
    await waitUntil('three retries', () => (p.stderr().match(/retrying in/g) ?? []).length >= 3, 15_000);
    assert.match(p.stderr(), /server unreachable or failing: .*connection refused; retrying in \d\.\d s/);
    const delays = [...p.stderr().matchAll(/retrying in (\d+\.\d) s/g)].map((m) => Number(m[1]));
    assert.ok(delays.every((d) => d <= 1), `capped: ${delays}`);
    assert.ok(!p.stderr().includes('ready'), 'not ready without enclaves');
    // The status is written when it changes: once at start and once with the first error. Every later retry
    // fails the same way, so nothing is being written while the folder is listed (no temporary file in sight).
    assert.deepEqual(listTree(rt), ['.lock', '.status.json'], 'no enclave written, only the lock and the status');
    const down = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(down.code, 4, 'status: not ready');
    assert.match(down.stdout, /not ready: no enclaves written yet/);
    assert.equal(p.child.exitCode, null, 'keeps trying');
    await s.restart(); // the same port and data folder (CA, keys, robot)
    assert.equal(s.server.port, port);
    await p.waitForLog(/ready/, 10_000);
    assert.ok(exists(keyOf(rt, 'ks', '/late')));
    const up = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(up.code, 0, up.stdout);
    assert.match(up.stdout, /running \(pid \d+\), ready\n/);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('an outage with the default back-off: waits capped at 30 s, status exits 4 meanwhile, back soon after the server', async () => {
    const s = await ownServer();
    const { stateDir } = await newRobot(['ks:/a'], s);
    const rt = runtimeDir();
    // The defaults (--backoff-base 1, --backoff-max 300): only the cap for an unreachable server keeps waits short.
    const p = spawnAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0']);
    procs.push(p);
    await p.waitForLog(/ready/, 15_000);
    assert.equal((await runAgent(['status', '--runtime-dir', rt])).code, 0);
    await s.stop('SIGKILL');
    await waitUntil('three failed attempts', () => (p.stderr().match(/retrying in/g) ?? []).length >= 3, 30_000);
    const during = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(during.code, 4, during.stdout);
    assert.match(during.stdout, /not ready: server unreachable or failing: .*connection refused/);
    assert.ok(exists(keyOf(rt, 'ks', '/a')), 'the enclave is still served');
    await s.restart();
    const restartedAfter = (p.stderr().match(/retrying in/g) ?? []).length;
    // The agent comes back at the end of the wait it announced last (or, if that attempt raced the restart,
    // of the next one): the bound comes from its own log, not from a guess about timing.
    const waits = (): number[] => [...p.stderr().matchAll(/retrying in (\d+\.\d) s/g)].map((m) => Number(m[1]));
    // Worst case: the wait in progress (attempt n-1) plus one more (attempt n), each at its ceiling, plus a login.
    const n = waits().length;
    const boundS = Math.min(30, 2 ** (n - 1)) + Math.min(30, 2 ** n) + 10;
    await waitUntil('back in contact', () => /"lastError": null/.test(fs.readFileSync(join(rt, '.status.json'), 'utf8')), boundS * 1000, 50);
    const all = waits();
    assert.ok(all.length <= restartedAfter + 1, `at most one attempt failed after the restart: ${all}`);
    all.forEach((w, n) => assert.ok(w <= Math.min(30, 2 ** n), `wait ${n} is ${w} s, above its ceiling min(30, 2^${n})`));
    const back = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(back.code, 0, back.stdout);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('status exits 4 when the agent is not running or its last contact is stale (3 min, on the status command\'s clock)', async () => {
    const { stateDir } = await newRobot(['stalk:/a']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    assert.equal((await runAgent(['status', '--runtime-dir', rt])).code, 0);
    const later = await runAgent(['status', '--runtime-dir', rt], { env: shiftedClockEnv(base, 181_000) });
    assert.equal(later.code, 4, later.stdout);
    const staleFor = Number(/not ready: stale: no contact with the server for (\d+) s/.exec(later.stdout)?.[1]);
    assert.ok(staleFor >= 181, later.stdout);
    const json = JSON.parse((await runAgent(['status', '--json', '--runtime-dir', rt], { env: shiftedClockEnv(base, 181_000) })).stdout);
    assert.equal(json.healthy, false);
    assert.match(json.problem, /^stale/);
    p.child.kill('SIGKILL');
    await p.exited;
    const dead = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(dead.code, 4);
    assert.match(dead.stdout, /not running, not ready: the agent \(pid \d+\) is not running/);
    assert.equal((await runAgent(['purge', '--runtime-dir', rt])).code, 0);
    const none = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(none.code, 4);
    assert.match(none.stdout, /nothing held/);
  });

  test('server lost while running (killed): keeps the enclaves until they expire, then removes them', async (t) => {
    const s = await ownServer();
    const { robot, stateDir } = await newRobot(['ks2:/long'], s);
    // The API issues whole days; a keystore imported from sros2 files can hold a certificate that ends in seconds.
    const now = Date.now();
    const expiresAt = new Date(Math.ceil((now + 7000) / 1000) * 1000);
    await s.admin.importKeystore('ks', datedKeystoreArchive(join(base, `short-ks-${++dirSeq}`), [
      { path: '/short', notBefore: new Date(now - 3600_000), notAfter: expiresAt },
    ]));
    await s.admin.bind('ks', '/short', robot);
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-max', '1']);
    await p.waitForLog(/ready: holding 2 enclave/, 15_000);
    await s.stop('SIGKILL');
    await p.waitForLog(/server unreachable/, 10_000);
    t.diagnostic(`outage seen ${expiresAt.getTime() - Date.now()} ms before the certificate ends`);
    assert.ok(Date.now() < expiresAt.getTime() - 500, 'setup took too long to observe the outage before the expiry');
    assert.ok(exists(keyOf(rt, 'ks', '/short')), 'still served while the server is away');
    await p.waitForLog(/enclave ks:\/short expired at .*: removed/, 20_000);
    assert.ok(Date.now() >= expiresAt.getTime(), 'not removed before its notAfter');
    assert.match(p.stderr(), new RegExp(`enclave ks:/short expired at ${expiresAt.toISOString().replace(/\./g, '\\.')}: removed`));
    assert.ok(!exists(join(rt, 'ks')));
    assert.ok(exists(keyOf(rt, 'ks2', '/long')));
    const status = JSON.parse((await runAgent(['status', '--json', '--runtime-dir', rt])).stdout);
    assert.match(status.lastError, /server unreachable/);
    assert.deepEqual(status.enclaves.map((e: { path: string }) => e.path), ['/long']);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('clock an hour behind the server: login signed on server time, warning for a not-yet-valid certificate, skew reported', async () => {
    // backdateSeconds 0: the certificate starts at the server's now, an hour after this robot's now.
    await fx.admin.createKeystore('clock', { backdateSeconds: 0 });
    const { robot, stateDir } = await newRobot(['clock:/slow']);
    const rt = runtimeDir();
    // The real server, the real time; only the agent process's clock is an hour behind (helpers/agent-clock.ts).
    const p = run(stateDir, rt, [], shiftedClockEnv(base, -3600_000));
    await p.waitForLog(/ready/, 15_000);
    assert.match(p.stderr(), /signing the login on the server's time/);
    assert.match(p.stderr(), /certificate of clock:\/slow is not valid before .* \(the server's clock is (3599|3600|3601) s ahead\)/);
    const report = await waitForReport(fx.admin, robot);
    assert.ok(Math.abs(report.clockSkewMs - 3600_000) < 2000, `skew ${report.clockSkewMs}`);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('refuses a runtime folder on disk, with a clear message and nothing written', async () => {
    const { stateDir } = await newRobot();
    const parent = fs.mkdtempSync('/var/tmp/agent-run-disk-');
    try {
      const r = await runAgent(['run', '--state-dir', stateDir, '--runtime-dir', join(parent, 'rt'), '--splay', '0']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /runtime folder .*\/rt is on ext2\/3\/4 \(0xef53\), not tmpfs or ramfs: refusing/);
      assert.deepEqual(fs.readdirSync(parent), []);
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  });

  test('a planted symlink in the runtime folder stops the agent; its target is untouched', async () => {
    const { stateDir } = await newRobot(['planted:/a']);
    const rt = runtimeDir();
    const target = runtimeDir();
    fs.symlinkSync(target, join(rt, 'planted'));
    const p = run(stateDir, rt);
    const { code } = await waitExit(p, 15_000);
    assert.equal(code, 1);
    assert.match(p.stderr(), /planted is a symlink the agent did not create/);
    assert.deepEqual(fs.readdirSync(target), []);
    assert.ok(!p.stderr().includes('ready'));
  });

  test('a disk folder mounted over the runtime folder after the first write: the agent refuses to write there and says why', async (t) => {
    const { stateDir } = await newRobot(['mnt:/a']);
    const rt = runtimeDir();
    const disk = fs.mkdtempSync('/var/tmp/agent-run-mnt-');
    const p = run(stateDir, rt);
    try {
      await p.waitForLog(/ready/, 15_000);
      try {
        execFileSync('mount', ['--bind', disk, rt], { stdio: 'pipe' });
      } catch (err) {
        t.skip(`cannot bind-mount here: ${(err as Error).message.split('\n')[0]}`);
        return;
      }
      try {
        await fx.admin.rotate('mnt', '/a'); // a new generation to write
        const { code } = await waitExit(p, 10_000);
        assert.equal(code, 1, p.stderr());
        assert.match(p.stderr(), /runtime folder .* was replaced after the agent checked it \(.*on ext2\/3\/4 .*\): refusing to write enclave keys there/);
        assert.deepEqual(listTree(disk), [], 'no key.pem (nothing at all) on the disk folder');
      } finally {
        execFileSync('umount', [rt]);
      }
      assert.deepEqual(listTree(rt), [], 'the tmpfs folder it had written to was purged on the way out');
    } finally {
      fs.rmSync(disk, { recursive: true, force: true });
    }
  });

  test('one agent per runtime folder: exec on the folder run uses is refused, run keeps its enclaves', async () => {
    const { stateDir } = await newRobot(['shared:/a', 'shared:/b']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    const key = fs.readFileSync(keyOf(rt, 'shared', '/b'), 'utf8');
    const link = fs.readlinkSync(join(rt, 'shared'));
    const second = await runAgent(['exec', '--state-dir', stateDir, '--runtime-dir', rt, '--enclave', 'shared:/a', '--', 'true']);
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`runtime folder ${rt} is in use by another enclave-agent \\(pid ${p.child.pid}\\): refusing to run a second agent`));
    const third = await runAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0']);
    assert.equal(third.code, 1);
    assert.match(third.stderr, /is in use by another enclave-agent/);
    const purge = await runAgent(['purge', '--runtime-dir', rt]);
    assert.equal(purge.code, 1);
    assert.match(purge.stderr, /is in use by another enclave-agent/);
    assert.equal(fs.readFileSync(keyOf(rt, 'shared', '/b'), 'utf8'), key, 'run\'s enclaves untouched');
    assert.equal(fs.readlinkSync(join(rt, 'shared')), link);
    assert.equal(p.child.exitCode, null, 'run keeps running');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
    assert.deepEqual(listTree(rt), [], 'purged, lock released');
  });

  test('stale trees are purged before the enrollment and --group are checked', async () => {
    const { stateDir } = await newRobot(['early:/a']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    p.child.kill('SIGKILL');
    await p.exited;
    assert.ok(exists(keyOf(rt, 'early', '/a')));
    const badGroup = await runAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0', '--group', 'no_such_group_x']);
    assert.equal(badGroup.code, 1);
    assert.match(badGroup.stderr, /removed 1 keystore\(s\) left in .* by an earlier run/);
    assert.match(badGroup.stderr, /group no_such_group_x does not exist/);
    assert.deepEqual(listTree(rt), [], 'stale tree and lock gone');

    const p2 = run(stateDir, rt);
    await p2.waitForLog(/ready/, 15_000);
    p2.child.kill('SIGKILL');
    await p2.exited;
    const r = await runAgent(['run', '--state-dir', join(base, 'not-enrolled'), '--runtime-dir', rt, '--splay', '0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /not enrolled/);
    assert.deepEqual(listTree(rt), []);
  });

  test('a state folder or pinned CA that others can change is refused', async () => {
    const { stateDir } = await newRobot();
    const rt = runtimeDir();
    fs.chmodSync(join(stateDir, 'ca.pem'), 0o666);
    const r = await runAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /pinned CA .*ca\.pem is writable by others \(mode 666\): refusing to trust it/);
    fs.chmodSync(join(stateDir, 'ca.pem'), 0o644);
    fs.chmodSync(stateDir, 0o757);
    const r2 = await runAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0']);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /state folder .* is writable by others \(mode 757\)/);
    assert.deepEqual(listTree(rt), []);
  });

  test('--backoff-base 0 or --backoff-max 0 is a usage error (exit 2)', async () => {
    for (const args of [['--backoff-base', '0'], ['--backoff-max', '0']]) {
      const r = await runAgent(['run', '--state-dir', join(base, 'nowhere'), '--runtime-dir', runtimeDir(), ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /must be at least (0\.1|1) s/);
    }
  });

  test('purge refuses a runtime folder of another user or writable by others', async () => {
    const rt = runtimeDir();
    fs.mkdirSync(join(rt, '.ks.3'));
    fs.chmodSync(rt, 0o777);
    const r = await runAgent(['purge', '--runtime-dir', rt]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is writable by others \(mode 777\)/);
    fs.chmodSync(rt, 0o700);
    fs.chownSync(rt, 65534, 65534);
    const r2 = await runAgent(['purge', '--runtime-dir', rt]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /belongs to uid 65534, not to this agent/);
    assert.ok(exists(join(rt, '.ks.3')), 'nothing removed');
  });

  test('purge command removes a tree left behind; status without a run says so', async () => {
    const { stateDir } = await newRobot(['purge:/a']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    p.child.kill('SIGKILL');
    await p.exited;
    const st = await runAgent(['status', '--runtime-dir', rt]);
    assert.match(st.stdout, /not running/);
    const r = await runAgent(['purge', '--runtime-dir', rt]);
    assert.equal(r.code, 0);
    assert.match(r.stderr, /purged 1 keystore\(s\)/);
    assert.deepEqual(listTree(rt), []);
    assert.match((await runAgent(['status', '--runtime-dir', rt])).stdout, /nothing held/);
  });
});

async function waitExit(p: AgentProc, ms: number): Promise<{ code: number | null }> {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), ms);
  const r = await p.exited;
  clearTimeout(timer);
  return r;
}
