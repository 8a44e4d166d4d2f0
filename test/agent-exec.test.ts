/**
 * `enclave-agent exec` as a real process running real commands: environment, exit codes, signal
 * forwarding, purge on exit, revocation (SIGTERM then SIGKILL after the grace period), rotation with and
 * without --restart-on-change. Against the contract stub of the robot API over HTTPS.
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { enrollAgent, exists, listTree, shmDir, spawnAgent, waitUntil, type AgentProc } from './helpers/agent-proc.js';
import { fakeEnclaveFiles, StubServer } from './helpers/agent-stub-server.js';
import { makeTestPki, type TestPki } from './helpers/agent-tls.js';

const base = fs.mkdtempSync(join(tmpdir(), 'agent-exec-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
let pki: TestPki;
let stub: StubServer;
let seq = 0;

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

async function robotWith(tag: string, paths = ['/app/talker']): Promise<{ robot: string; stateDir: string }> {
  const robot = `exec_${++seq}`;
  const stateDir = await enrollAgent({ base, server: stub.url, caFile: pki.caFile, token: stub.createRobot(robot) });
  setEnclaves(robot, tag, paths);
  return { robot, stateDir };
}

function setEnclaves(robot: string, tag: string, paths: string[]): void {
  const notAfter = new Date(Date.now() + 3600_000).toISOString();
  stub.setKeystores(robot, paths.length ? [{ name: 'ks', enclaves: paths.map((path) => ({ path, notAfter, files: fakeEnclaveFiles(tag) })) }] : []);
}

function exec(stateDir: string, args: string[], command: string[], env?: NodeJS.ProcessEnv): AgentProc {
  const p = spawnAgent(['exec', '--state-dir', stateDir, '--backoff-max', '0.5', ...args, '--', ...command], { env });
  procs.push(p);
  return p;
}

function runtimeDir(): string {
  const d = shmDir('agent-exec');
  shm.push(d);
  return d;
}

/** A node one-liner as COMMAND. */
const node = (code: string): string[] => [process.execPath, '-e', code];

describe('agent exec', () => {
  test('runs COMMAND with the ROS security variables and the enclave on disk, exits with its code, purges', async () => {
    const { stateDir } = await robotWith('g1');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt], node(`
      const fs = require('fs');
      const e = process.env;
      const dir = e.ROS_SECURITY_KEYSTORE + '/enclaves' + e.ROS_SECURITY_ENCLAVE_OVERRIDE;
      console.log(JSON.stringify({
        keystore: e.ROS_SECURITY_KEYSTORE, enable: e.ROS_SECURITY_ENABLE, strategy: e.ROS_SECURITY_STRATEGY,
        override: e.ROS_SECURITY_ENCLAVE_OVERRIDE, files: fs.readdirSync(dir).sort(), key: fs.readFileSync(dir + '/key.pem', 'utf8'),
      }));
      process.exit(7);
    `));
    const { code } = await p.exited;
    assert.equal(code, 7, p.stderr());
    const seen = JSON.parse(p.stdout());
    assert.equal(seen.keystore, join(rt, 'ks'));
    assert.equal(seen.enable, 'true');
    assert.equal(seen.strategy, 'Enforce');
    assert.equal(seen.override, '/app/talker');
    assert.deepEqual(seen.files, ['cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions_ca.cert.pem']);
    assert.equal(seen.key, fakeEnclaveFiles('g1')['key.pem']);
    assert.deepEqual(listTree(rt), [], 'purged when COMMAND exited');
  });

  test('default runtime folder is private under /dev/shm (or $XDG_RUNTIME_DIR) and removed afterwards', async () => {
    const { stateDir } = await robotWith('g1');
    const xdg = runtimeDir();
    const p = exec(stateDir, ['--enclave', 'ks:/app/talker'], node('console.log(process.env.ROS_SECURITY_KEYSTORE)'), { XDG_RUNTIME_DIR: xdg });
    assert.equal((await p.exited).code, 0, p.stderr());
    assert.equal(p.stdout().trim(), join(xdg, 'enclave-agent', `exec-${p.child.pid}`, 'ks'));
    assert.deepEqual(fs.readdirSync(join(xdg, 'enclave-agent')), [], 'private folder removed');

    const p2 = exec(stateDir, ['--enclave', 'ks:/app/talker'], node('console.log(process.env.ROS_SECURITY_KEYSTORE)'), { XDG_RUNTIME_DIR: undefined });
    assert.equal((await p2.exited).code, 0, p2.stderr());
    const uid = process.getuid!();
    assert.equal(p2.stdout().trim(), `/dev/shm/enclave-agent-${uid}/exec-${p2.child.pid}/ks`);
    assert.ok(!exists(`/dev/shm/enclave-agent-${uid}/exec-${p2.child.pid}`));
    try {
      fs.rmdirSync(`/dev/shm/enclave-agent-${uid}`); // left (empty) by design; tidy up if no one else uses it
    } catch {
      // in use by another exec
    }
  });

  test('forwards SIGTERM to COMMAND and exits with its code; 128+N when COMMAND dies of a signal', async () => {
    const { stateDir } = await robotWith('g1');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt], node(`
      process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(42); });
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p.stdout().includes('started'));
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 42);
    assert.match(p.stdout(), /got SIGTERM/);
    assert.deepEqual(listTree(rt), []);

    const p2 = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt], node(`
      process.on('SIGUSR1', () => console.log('got SIGUSR1'));
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p2.stdout().includes('started'));
    p2.child.kill('SIGUSR1');
    await waitUntil('SIGUSR1 forwarded', () => p2.stdout().includes('got SIGUSR1'));
    p2.child.kill('SIGHUP'); // COMMAND's default action: die of SIGHUP
    assert.equal((await p2.exited).code, 128 + 1);
    assert.deepEqual(listTree(rt), []);
  });

  test('revocation stops COMMAND (SIGTERM, then SIGKILL after the grace period), purges, exits 3', async () => {
    const { robot, stateDir } = await robotWith('g1');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt, '--grace', '0.5'], node(`
      process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p.stdout().includes('started'));
    const t0 = Date.now();
    setEnclaves(robot, 'g1', []);
    const { code } = await p.exited;
    const took = Date.now() - t0;
    assert.equal(code, 3);
    assert.ok(took < 2000, `stopped within ${took} ms`);
    assert.match(p.stdout(), /ignoring SIGTERM/);
    assert.match(p.stderr(), /enclave ks:\/app\/talker was revoked or unbound: stopping/);
    assert.match(p.stderr(), /did not stop within 0.5 s: killing it/);
    assert.deepEqual(listTree(rt), []);
  });

  test('rotation: restarts COMMAND with --restart-on-change, otherwise keeps it and logs', async () => {
    const { robot, stateDir } = await robotWith('g1');
    const rt = runtimeDir();
    const show = node(`
      const e = process.env;
      const key = require('fs').readFileSync(e.ROS_SECURITY_KEYSTORE + '/enclaves' + e.ROS_SECURITY_ENCLAVE_OVERRIDE + '/key.pem', 'utf8');
      console.log('loaded ' + key.split(' ')[1]); setInterval(() => {}, 1000);
    `);
    const p = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt, '--restart-on-change'], show);
    await waitUntil('first start', () => p.stdout().includes('loaded g1'));
    setEnclaves(robot, 'g2', ['/app/talker']);
    await waitUntil('restart with new files', () => p.stdout().includes('loaded g2'), 3000);
    assert.match(p.stderr(), /rotated: restarting/);
    p.child.kill('SIGTERM');
    await p.exited;
    assert.deepEqual(listTree(rt), []);

    const rt2 = runtimeDir();
    const q = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt2], show);
    await waitUntil('first start', () => q.stdout().includes('loaded g2'));
    setEnclaves(robot, 'g3', ['/app/talker']);
    await q.waitForLog(/rotated: new files in place; .* keeps the ones it loaded/, 3000);
    assert.equal(fs.readFileSync(join(rt2, 'ks/enclaves/app/talker/key.pem'), 'utf8'), fakeEnclaveFiles('g3')['key.pem']);
    assert.equal(q.stdout().match(/loaded/g)?.length, 1, 'not restarted');
    q.child.kill('SIGTERM');
    await q.exited;
  });

  test('an enclave not bound to this robot, or a missing command, fails clearly', async () => {
    const { stateDir } = await robotWith('g1');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', 'ks:/other', '--runtime-dir', rt], ['true']);
    assert.equal((await p.exited).code, 3);
    assert.match(p.stderr(), /enclave ks:\/other is not bound to robot exec_\d+/);
    const q = exec(stateDir, ['--enclave', 'ks:/app/talker', '--runtime-dir', rt], ['/nonexistent/ros2-app']);
    assert.equal((await q.exited).code, 127);
    assert.match(q.stderr(), /cannot run \/nonexistent\/ros2-app: command not found/);
    assert.deepEqual(listTree(rt), []);
  });
});
