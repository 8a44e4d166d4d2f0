/**
 * `enclave-agent enroll`, `run`, `status` and `purge` as real processes against the contract stub of the
 * robot API over HTTPS with a pinned CA (helpers/agent-stub-server.ts), writing to a real tmpfs.
 * The same life cycle against the real server is in agent-e2e.test.ts.
 */
import { createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { makeLeafCert, makeTestPki, type TestPki } from './helpers/agent-tls.js';
import { fakeEnclaveFiles, StubServer, type StubKeystore } from './helpers/agent-stub-server.js';
import { enrollAgent, exists, listTree, runAgent, shmDir, spawnAgent, waitUntil, type AgentProc } from './helpers/agent-proc.js';

const base = fs.mkdtempSync(join(tmpdir(), 'agent-run-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
let pki: TestPki;
let stub: StubServer;
let robotSeq = 0;

before(async () => {
  pki = makeTestPki(join(base, 'pki'));
  stub = await StubServer.start({ pki });
});
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await stub.stop();
  fs.rmSync(base, { recursive: true, force: true });
  for (const d of shm) fs.rmSync(d, { recursive: true, force: true });
});

function runtimeDir(): string {
  const d = shmDir('agent-run');
  shm.push(d);
  return d;
}

function keystore(name: string, tag: string, paths: string[], notAfter = new Date(Date.now() + 3600_000)): StubKeystore {
  return { name, enclaves: paths.map((path) => ({ path, notAfter: notAfter.toISOString(), files: fakeEnclaveFiles(tag) })) };
}

async function newRobot(server = stub): Promise<{ robot: string; stateDir: string }> {
  const robot = `robot_${++robotSeq}`;
  const token = server.createRobot(robot, { site: 'test' });
  const stateDir = await enrollAgent({ base, server: server.url, caFile: pki.caFile, token });
  return { robot, stateDir };
}

function run(stateDir: string, runtime: string, extra: string[] = [], env?: NodeJS.ProcessEnv): AgentProc {
  const p = spawnAgent(['run', '--state-dir', stateDir, '--runtime-dir', runtime, '--splay', '0', '--backoff-base', '0.2', '--backoff-max', '1', ...extra], { env });
  procs.push(p);
  return p;
}

const keyOf = (runtime: string, ks: string, path: string): string => join(runtime, ks, 'enclaves', path, 'key.pem');

describe('agent enroll', () => {
  test('creates the device key 0600 in a 0700 state folder and saves server, robot and CA', async () => {
    const token = stub.createRobot('enroll_1', { site: 'tokyo' });
    const stateDir = join(base, 'enroll-1');
    const r = await runAgent(['enroll', '--server', stub.url, '--ca', pki.caFile, '--token', token, '--state-dir', stateDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /enrolled as robot enroll_1 \(site=tokyo\)/);
    assert.equal(fs.statSync(stateDir).mode & 0o777, 0o700);
    const keyPath = join(stateDir, 'device.key.pem');
    assert.equal(fs.statSync(keyPath).mode & 0o777, 0o600);
    const key = createPrivateKey(fs.readFileSync(keyPath));
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.match(fs.readFileSync(keyPath, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(fs.readFileSync(join(stateDir, 'ca.pem'), 'utf8'), pki.caPem);
    const state = JSON.parse(fs.readFileSync(join(stateDir, 'state.json'), 'utf8'));
    assert.equal(state.server, stub.url);
    assert.equal(state.robot, 'enroll_1');
    assert.deepEqual(fs.readdirSync(stateDir).sort(), ['ca.pem', 'device.key.pem', 'state.json']);
    assert.ok(!r.stderr.includes(token), 'the token is never logged');

    const again = await runAgent(['enroll', '--server', stub.url, '--ca', pki.caFile, '--token', stub.createRobot('enroll_2'), '--state-dir', stateDir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already enrolled as robot enroll_1 .*--force/);
    assert.equal(fs.readFileSync(keyPath, 'utf8'), key.export({ type: 'pkcs8', format: 'pem' }), 'key untouched');

    const forced = await runAgent(['enroll', '--force', '--server', stub.url, '--ca', pki.caFile, '--token', stub.createRobot('enroll_3'), '--state-dir', stateDir]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(fs.readFileSync(keyPath, 'utf8'), key.export({ type: 'pkcs8', format: 'pem' }), 'new key');
    assert.equal(JSON.parse(fs.readFileSync(join(stateDir, 'state.json'), 'utf8')).robot, 'enroll_3');
  });

  test('a used or invalid token is refused (exit 3) and leaves no enrollment', async () => {
    const token = stub.createRobot('enroll_used');
    await enrollAgent({ base, server: stub.url, caFile: pki.caFile, token });
    const stateDir = join(base, 'enroll-used');
    const r = await runAgent(['enroll', '--server', stub.url, '--ca', pki.caFile, '--token', token, '--state-dir', stateDir]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /enrollment refused: enrollment token invalid, expired or used/);
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });

  test('a server whose certificate is not from the pinned CA is refused', async () => {
    const other = makeTestPki(join(base, 'other-pki'), 'other-ca');
    const stateDir = join(base, 'enroll-wrong-ca');
    const r = await runAgent(['enroll', '--server', stub.url, '--ca', other.caFile, '--token', stub.createRobot('enroll_ca'), '--state-dir', stateDir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /TLS: the server certificate is not signed by the pinned CA/);
    assert.ok(!exists(join(stateDir, 'state.json')));
    const noCa = await runAgent(['enroll', '--server', stub.url, '--token', 'x', '--state-dir', stateDir]);
    assert.equal(noCa.code, 2);
    assert.match(noCa.stderr, /needs its CA certificate \(--ca FILE\)/);
  });
});

describe('agent run', () => {
  test('pulls and writes enclaves, reports, shows status, purges on SIGTERM and exits 0', async () => {
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('fleet', 'g1', ['/fleet/r/driver', '/fleet/r/nav']), keystore('lab', 'g1', ['/cam'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready: holding 3 enclave\(s\) in 2 keystore\(s\)/);
    assert.equal(fs.readFileSync(join(rt, 'fleet/enclaves/fleet/r/nav/cert.pem'), 'utf8'), fakeEnclaveFiles('g1')['cert.pem']);
    assert.equal(fs.statSync(keyOf(rt, 'lab', '/cam')).mode & 0o777, 0o600);

    await waitUntil('a report', () => stub.reports.some((r) => r.robot === robot));
    const report = stub.reports.filter((r) => r.robot === robot).at(-1)!.body;
    assert.equal(report.filesystem, 'tmpfs');
    assert.equal(typeof report.clockSkewMs, 'number');
    assert.match(String(report.agentVersion), /^\d+\.\d+\.\d+/);
    assert.deepEqual(
      (report.enclaves as { keystore: string; path: string }[]).map((e) => `${e.keystore}:${e.path}`).sort(),
      ['fleet:/fleet/r/driver', 'fleet:/fleet/r/nav', 'lab:/cam'],
    );

    const status = await runAgent(['status', '--runtime-dir', rt]);
    assert.equal(status.code, 0);
    assert.match(status.stdout, new RegExp(`robot ${robot} at .*: running \\(pid ${p.child.pid}\\), ready`));
    assert.match(status.stdout, /fleet\s+\/fleet\/r\/driver\s+\S+ \(in 60 min\)/);
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
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a'])]);
    const rt = runtimeDir();
    const p1 = run(stateDir, rt);
    await p1.waitForLog(/ready/);
    p1.child.kill('SIGKILL');
    await p1.exited;
    assert.ok(exists(keyOf(rt, 'ks', '/a')), 'SIGKILL leaves the tree behind');

    stub.setKeystores(robot, [keystore('ks', 'g2', ['/b'])]);
    const p2 = run(stateDir, rt);
    await p2.waitForLog(/ready/);
    assert.match(p2.stderr(), /removed 1 keystore\(s\) left in .* by an earlier run/);
    assert.ok(!exists(join(rt, 'ks/enclaves/a')), 'stale enclave removed');
    assert.equal(fs.readdirSync(rt).filter((n) => n.startsWith('.ks.')).length, 1, 'one generation: the new one');
    assert.ok(exists(keyOf(rt, 'ks', '/b')));
    p2.child.kill('SIGINT');
    assert.equal((await p2.exited).code, 0);
    assert.deepEqual(listTree(rt), []);
  });

  test('revocation, unbinding and rotation reach the files within a second', async () => {
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a', '/b'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/);
    await waitUntil('first report', () => stub.reports.filter((r) => r.robot === robot).length === 1);

    stub.setKeystores(robot, [keystore('ks', 'g2', ['/a', '/b'])]);
    const rotated = await waitUntil('rotation', () => fs.readFileSync(keyOf(rt, 'ks', '/a'), 'utf8').includes('g2'), 2000);
    assert.ok(rotated < 1000, `rotation applied in ${rotated} ms`);

    stub.setKeystores(robot, [keystore('ks', 'g2', ['/a'])]);
    const revoked = await waitUntil('revocation', () => !exists(join(rt, 'ks/enclaves/b')), 2000);
    assert.ok(revoked < 1000, `revocation applied in ${revoked} ms`);
    assert.ok(exists(keyOf(rt, 'ks', '/a')));

    stub.setKeystores(robot, []);
    await waitUntil('last enclave removed', () => !exists(join(rt, 'ks')), 2000);
    await waitUntil('a report per change', () => stub.reports.filter((r) => r.robot === robot).length === 4);
    assert.deepEqual(stub.reports.filter((r) => r.robot === robot).at(-1)!.body.enclaves, []);
    assert.match(p.stderr(), /enclave ks:\/a updated \(rotated\)/);
    assert.match(p.stderr(), /enclave ks:\/b removed \(revoked or unbound\)/);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('a deleted device is purged and the agent fails with exit 3', async () => {
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/);
    stub.deleteRobot(robot);
    const { code } = await p.exited;
    assert.equal(code, 3);
    assert.match(p.stderr(), /the server refused this device .*revoked or deleted/);
    assert.deepEqual(listTree(rt), []);
  });

  test('an expired token is renewed transparently (fresh assertion, unique jti)', async () => {
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--poll-wait', '1']);
    await p.waitForLog(/ready/);
    const logins = stub.logins;
    stub.dropTokens();
    stub.setKeystores(robot, [keystore('ks', 'g2', ['/a'])]);
    await waitUntil('rotation after re-login', () => fs.readFileSync(keyOf(rt, 'ks', '/a'), 'utf8').includes('g2'), 5000);
    assert.ok(stub.logins > logins);
    assert.equal(p.child.exitCode, null, 'still running');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('server down at start: retries with jittered backoff, never ready before enclaves, then catches up', async () => {
    const port = await freePort();
    const down = await StubServer.start({ pki, port });
    const robot = 'late_robot';
    const token = down.createRobot(robot);
    const stateDir = await enrollAgent({ base, server: down.url, caFile: pki.caFile, token });
    down.setKeystores(robot, [keystore('ks', 'g1', ['/late'])]);
    await down.stop();
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-base', '0.1', '--backoff-max', '0.4']);
    await waitUntil('three retries', () => (p.stderr().match(/retrying in/g) ?? []).length >= 3, 10_000);
    assert.match(p.stderr(), /server unreachable or failing: .*connection refused; retrying in \d\.\d s/);
    const delays = [...p.stderr().matchAll(/retrying in (\d+\.\d) s/g)].map((m) => Number(m[1]));
    assert.ok(delays.every((d) => d <= 0.4), `capped: ${delays}`);
    assert.ok(!p.stderr().includes('ready'), 'not ready without enclaves');
    assert.deepEqual(listTree(rt), ['.status.json'], 'no enclave written, only the status');
    assert.equal(p.child.exitCode, null, 'keeps trying');
    await down.listen(port);
    await p.waitForLog(/ready/, 5000);
    assert.ok(exists(keyOf(rt, 'ks', '/late')));
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
    await down.stop();
  });

  test('server lost while running: keeps the enclaves until they expire, then removes them', async () => {
    const port = await freePort();
    const s = await StubServer.start({ pki, port });
    const token = s.createRobot('lonely');
    const stateDir = await enrollAgent({ base, server: s.url, caFile: pki.caFile, token });
    s.setKeystores('lonely', [keystore('ks', 'g1', ['/short'], new Date(Date.now() + 4000)), keystore('ks2', 'g1', ['/long'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-max', '0.5']);
    await p.waitForLog(/ready/);
    await s.stop();
    await p.waitForLog(/server unreachable/);
    assert.ok(exists(keyOf(rt, 'ks', '/short')), 'still served while the server is away');
    await p.waitForLog(/enclave ks:\/short expired at .*: removed/, 8000);
    assert.ok(!exists(join(rt, 'ks')));
    assert.ok(exists(keyOf(rt, 'ks2', '/long')));
    const status = JSON.parse((await runAgent(['status', '--json', '--runtime-dir', rt])).stdout);
    assert.match(status.lastError, /server unreachable/);
    assert.deepEqual(status.enclaves.map((e: { path: string }) => e.path), ['/long']);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('clock behind the server: login signed on server time, warning for a not-yet-valid certificate, skew reported', async () => {
    const s = await StubServer.start({ pki });
    try {
      const token = s.createRobot('slow_clock');
      const stateDir = await enrollAgent({ base, server: s.url, caFile: pki.caFile, token });
      s.dateOffsetMs = 3600_000; // the server is an hour ahead of this robot
      const cert = makeLeafCert(pki, 'slow', new Date(Date.now() + 1800_000), new Date(Date.now() + 86400_000));
      const files = { ...fakeEnclaveFiles('g1'), 'cert.pem': cert };
      s.setKeystores('slow_clock', [{ name: 'ks', enclaves: [{ path: '/slow', notAfter: new Date(Date.now() + 86400_000).toISOString(), files }] }]);
      const rt = runtimeDir();
      const p = run(stateDir, rt);
      await p.waitForLog(/ready/);
      assert.match(p.stderr(), /signing the login on the server's time/);
      assert.match(p.stderr(), /certificate of ks:\/slow is not valid before .* \(the server's clock is 3600 s ahead\)/);
      await waitUntil('report', () => s.reports.length > 0);
      const skew = Number(s.reports[0]!.body.clockSkewMs);
      assert.ok(Math.abs(skew - 3600_000) < 2000, `skew ${skew}`);
      p.child.kill('SIGTERM');
      assert.equal((await p.exited).code, 0);
    } finally {
      await s.stop();
    }
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
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a'])]);
    const rt = runtimeDir();
    const target = runtimeDir();
    fs.symlinkSync(target, join(rt, 'ks'));
    const p = run(stateDir, rt);
    const { code } = await p.exited;
    assert.equal(code, 1);
    assert.match(p.stderr(), /ks is a symlink the agent did not create/);
    assert.deepEqual(fs.readdirSync(target), []);
    assert.ok(!p.stderr().includes('ready'));
  });

  test('purge command removes a tree left behind; status without a run says so', async () => {
    const { robot, stateDir } = await newRobot();
    stub.setKeystores(robot, [keystore('ks', 'g1', ['/a'])]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/);
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
