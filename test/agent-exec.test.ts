/**
 * `enclave-agent exec` as a real process running real commands, against the real server (one per file,
 * `server/main.ts serve` over HTTPS with its own CA): environment, exit codes, signal forwarding, purge on
 * exit, revocation (SIGTERM then SIGKILL after the grace period), rotation with and without
 * --restart-on-change.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { faultOnSigwinchEnv } from './helpers/agent-fault.js';
import { enrollAgent, exists, listTree, runAgent, shmDir, spawnAgent, waitUntil, type AgentProc } from './helpers/agent-proc.js';
import { serverFixture, type ServerFixture } from './helpers/agent-server.js';

const RUNTIME_FILES = ['cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions_ca.cert.pem'];
const base = fs.mkdtempSync(join(tmpdir(), 'agent-exec-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
let fx: ServerFixture;
let seq = 0;

before(async () => {
  fx = await serverFixture({ dataDir: join(base, 'data') });
  await fx.admin.createKeystore('ks');
});
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await fx?.stop();
  fs.rmSync(base, { recursive: true, force: true });
  for (const d of shm) fs.rmSync(d, { recursive: true, force: true });
});

/** A robot with its own enclave `KS:/app/talker_N` (created and bound), enrolled by the agent CLI. */
async function robotWith(ks = 'ks'): Promise<{ robot: string; stateDir: string; ks: string; path: string; enclave: string; binding: string }> {
  const robot = `exec_${++seq}`;
  const path = `/app/talker_${seq}`;
  await fx.admin.createRobot(robot);
  await fx.admin.createEnclave(ks, path);
  const binding = await fx.admin.bind(ks, path, robot);
  const stateDir = await enrollAgent({ base, server: fx.server.url, caFile: fx.server.caFile, token: await fx.admin.enrollmentToken(robot) });
  return { robot, stateDir, ks, path, enclave: `${ks}:${path}`, binding };
}

async function serialOf(ks: string, path: string): Promise<string> {
  return (await fx.admin.getEnclave(ks, path)).serial.toUpperCase();
}

function exec(stateDir: string, args: string[], command: string[], env?: NodeJS.ProcessEnv): AgentProc {
  const p = spawnAgent(['exec', '--state-dir', stateDir, '--backoff-max', '1', ...args, '--', ...command], { env });
  procs.push(p);
  return p;
}

function runtimeDir(): string {
  const d = shmDir('agent-exec');
  shm.push(d);
  return d;
}

/** A process that exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** COMMAND: a shell that starts `sleep 300` in the background, writes both pids to `file`, and waits. */
function shellWithChild(file: string, then = 'wait'): string[] {
  return ['sh', '-c', `sleep 300 & echo "$$ $!" > ${file}; echo started; ${then}`];
}

async function pidsFrom(p: AgentProc, file: string): Promise<{ sh: number; sleep: number }> {
  await waitUntil('COMMAND started', () => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('\n'), 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; agent stderr:\n${p.stderr()}`);
  });
  const [sh, sleep] = fs.readFileSync(file, 'utf8').trim().split(' ').map(Number) as [number, number];
  return { sh, sleep };
}

/** A node one-liner as COMMAND. */
const node = (code: string): string[] => [process.execPath, '-e', code];

/** COMMAND printing `loaded <certificate serial>` of its enclave, then running until stopped. */
const showSerial = node(`
  const e = process.env;
  const pem = require('fs').readFileSync(e.ROS_SECURITY_KEYSTORE + '/enclaves' + e.ROS_SECURITY_ENCLAVE_OVERRIDE + '/cert.pem');
  console.log('loaded ' + new (require('crypto').X509Certificate)(pem).serialNumber.toUpperCase()); setInterval(() => {}, 1000);
`);

describe('agent exec', () => {
  test('runs COMMAND with the ROS security variables and the enclave on disk, exits with its code, purges', async () => {
    const { stateDir, ks, path, enclave } = await robotWith();
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], node(`
      const fs = require('fs');
      const e = process.env;
      const dir = e.ROS_SECURITY_KEYSTORE + '/enclaves' + e.ROS_SECURITY_ENCLAVE_OVERRIDE;
      console.log(JSON.stringify({
        keystore: e.ROS_SECURITY_KEYSTORE, enable: e.ROS_SECURITY_ENABLE, strategy: e.ROS_SECURITY_STRATEGY,
        override: e.ROS_SECURITY_ENCLAVE_OVERRIDE, files: fs.readdirSync(dir).sort(),
        key: fs.readFileSync(dir + '/key.pem', 'utf8'), cert: fs.readFileSync(dir + '/cert.pem', 'utf8'),
      }));
      process.exit(7);
    `));
    const { code } = await p.exited;
    assert.equal(code, 7, p.stderr());
    const seen = JSON.parse(p.stdout());
    assert.equal(seen.keystore, join(rt, ks));
    assert.equal(seen.enable, 'true');
    assert.equal(seen.strategy, 'Enforce');
    assert.equal(seen.override, path);
    assert.deepEqual(seen.files, RUNTIME_FILES);
    const cert = new X509Certificate(seen.cert);
    assert.equal(cert.serialNumber.toUpperCase(), await serialOf(ks, path), 'the certificate the server issued');
    assert.match(cert.subject, new RegExp(`CN=${path}`));
    assert.equal(
      createPublicKey(createPrivateKey(seen.key)).export({ type: 'spki', format: 'pem' }),
      cert.publicKey.export({ type: 'spki', format: 'pem' }),
      'its private key',
    );
    assert.deepEqual(listTree(rt), [], 'purged when COMMAND exited');
  });

  test('default runtime folder is private under /dev/shm (or $XDG_RUNTIME_DIR) and removed afterwards', async () => {
    const { stateDir, ks, enclave } = await robotWith();
    const xdg = runtimeDir();
    const p = exec(stateDir, ['--enclave', enclave], node('console.log(process.env.ROS_SECURITY_KEYSTORE)'), { XDG_RUNTIME_DIR: xdg });
    assert.equal((await p.exited).code, 0, p.stderr());
    assert.equal(p.stdout().trim(), join(xdg, 'enclave-agent', `exec-${p.child.pid}`, ks));
    assert.deepEqual(fs.readdirSync(join(xdg, 'enclave-agent')), [], 'private folder removed');

    const p2 = exec(stateDir, ['--enclave', enclave], node('console.log(process.env.ROS_SECURITY_KEYSTORE)'), { XDG_RUNTIME_DIR: undefined });
    assert.equal((await p2.exited).code, 0, p2.stderr());
    const uid = process.getuid!();
    assert.equal(p2.stdout().trim(), `/dev/shm/enclave-agent-${uid}/exec-${p2.child.pid}/${ks}`);
    assert.ok(!exists(`/dev/shm/enclave-agent-${uid}/exec-${p2.child.pid}`));
    try {
      fs.rmdirSync(`/dev/shm/enclave-agent-${uid}`); // left (empty) by design; tidy up if no one else uses it
    } catch {
      // in use by another exec
    }
  });

  test('forwards SIGTERM to COMMAND and exits with its code; 128+N when COMMAND dies of a signal', async () => {
    const { stateDir, enclave } = await robotWith();
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], node(`
      process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(42); });
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p.stdout().includes('started'), 15_000);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 42);
    assert.match(p.stdout(), /got SIGTERM/);
    assert.deepEqual(listTree(rt), []);

    const p2 = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], node(`
      process.on('SIGUSR1', () => console.log('got SIGUSR1'));
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p2.stdout().includes('started'), 15_000);
    p2.child.kill('SIGUSR1');
    await waitUntil('SIGUSR1 forwarded', () => p2.stdout().includes('got SIGUSR1'));
    p2.child.kill('SIGHUP'); // COMMAND's default action: die of SIGHUP
    assert.equal((await p2.exited).code, 128 + 1);
    assert.deepEqual(listTree(rt), []);
  });

  test('revocation stops COMMAND (SIGTERM, then SIGKILL after the grace period), purges, exits 3', async () => {
    await fx.admin.createKeystore('revoking'); // the revocation adds a CRL to this keystore only
    const { stateDir, ks, path, enclave } = await robotWith('revoking');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt, '--grace', '0.5'], node(`
      process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p.stdout().includes('started'), 15_000);
    const t0 = Date.now();
    await fx.admin.revoke(ks, path);
    const { code } = await p.exited;
    const took = Date.now() - t0;
    assert.equal(code, 3);
    assert.ok(took < 2000, `stopped within ${took} ms`);
    assert.match(p.stdout(), /ignoring SIGTERM/);
    assert.match(p.stderr(), new RegExp(`enclave ${enclave} was revoked or unbound: stopping`));
    assert.match(p.stderr(), /did not stop within 0.5 s: killing it/);
    assert.deepEqual(listTree(rt), []);
  });

  test('revocation stops COMMAND\'s whole process group: a process COMMAND started is gone too', async () => {
    await fx.admin.createKeystore('revgroup');
    const { stateDir, ks, path, enclave } = await robotWith('revgroup');
    const rt = runtimeDir();
    const file = join(base, `pids-${seq}`);
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt, '--grace', '1'], shellWithChild(file));
    const { sh, sleep } = await pidsFrom(p, file);
    assert.ok(running(sleep));
    await fx.admin.revoke(ks, path);
    assert.equal((await p.exited).code, 3, p.stderr());
    await waitUntil('the background process of COMMAND gone', () => !running(sleep) && !running(sh), 3000);
    assert.deepEqual(listTree(rt), []);
  });

  test('when COMMAND exits, what it left running in its group is killed; an uncaught exception in the agent kills the group', async () => {
    const { stateDir, enclave } = await robotWith();
    const rt = runtimeDir();
    const file = join(base, `pids-${seq}`);
    // COMMAND exits at once, leaving `sleep 300` behind in its process group.
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], shellWithChild(file, 'exit 5'));
    const first = await pidsFrom(p, file);
    assert.equal((await p.exited).code, 5, p.stderr());
    await waitUntil('the leftover process gone', () => !running(first.sleep), 3000);
    assert.deepEqual(listTree(rt), []);

    const file2 = join(base, `pids-${seq}-fault`);
    const q = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], shellWithChild(file2), faultOnSigwinchEnv(base));
    const second = await pidsFrom(q, file2);
    q.child.kill('SIGWINCH'); // the agent throws: uncaught exception
    assert.equal((await q.exited).code, 1, q.stderr());
    assert.match(q.stderr(), /internal error: injected fault/);
    await waitUntil('COMMAND and its child gone', () => !running(second.sh) && !running(second.sleep), 3000);
    assert.deepEqual(listTree(rt), [], 'purged');
  });

  test('SIGTERM to the agent reaches COMMAND\'s whole group', async () => {
    const { stateDir, enclave } = await robotWith();
    const rt = runtimeDir();
    const file = join(base, `pids-${seq}`);
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], shellWithChild(file));
    const { sh, sleep } = await pidsFrom(p, file);
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 128 + 15, p.stderr());
    await waitUntil('COMMAND and its child gone', () => !running(sh) && !running(sleep), 3000);
    assert.deepEqual(listTree(rt), []);
  });

  test('--backoff-base below 0.1 s or --backoff-max below 1 s is a usage error', async () => {
    for (const args of [['--backoff-base', '0'], ['--backoff-base', '0.05'], ['--backoff-max', '0'], ['--backoff-max', '0.5']]) {
      const r = await runAgent(['exec', '--state-dir', join(base, 'nowhere'), '--enclave', 'ks:/a', ...args, '--', 'true']);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${args[0]} must be at least (0\\.1|1) s`));
    }
  });

  test('unbinding stops COMMAND too', async () => {
    const { stateDir, enclave, binding } = await robotWith();
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt, '--grace', '2'], node(`
      process.on('SIGTERM', () => { console.log('stopping'); process.exit(0); });
      console.log('started'); setInterval(() => {}, 1000);
    `));
    await waitUntil('COMMAND started', () => p.stdout().includes('started'), 15_000);
    await fx.admin.unbind(binding);
    assert.equal((await p.exited).code, 3);
    assert.match(p.stdout(), /stopping/);
    assert.match(p.stderr(), new RegExp(`enclave ${enclave} was revoked or unbound: stopping`));
    assert.deepEqual(listTree(rt), []);
  });

  test('rotation: restarts COMMAND with --restart-on-change, otherwise keeps it and logs', async () => {
    const { stateDir, ks, path, enclave } = await robotWith();
    const rt = runtimeDir();
    const first = await serialOf(ks, path);
    const p = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt, '--restart-on-change'], showSerial);
    await waitUntil('first start', () => p.stdout().includes(`loaded ${first}`), 15_000);
    await fx.admin.rotate(ks, path);
    const second = await serialOf(ks, path);
    assert.notEqual(second, first);
    await waitUntil('restart with new files', () => p.stdout().includes(`loaded ${second}`), 3000);
    assert.match(p.stderr(), /updated: certificate rotated[^\n]* \(cert\.pem, key\.pem[^)]*\): restarting/);
    p.child.kill('SIGTERM');
    await p.exited;
    assert.deepEqual(listTree(rt), []);

    const rt2 = runtimeDir();
    const q = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt2], showSerial);
    await waitUntil('first start', () => q.stdout().includes(`loaded ${second}`), 15_000);
    await fx.admin.rotate(ks, path);
    const third = await serialOf(ks, path);
    await q.waitForLog(/updated: certificate rotated[^\n]* \(cert\.pem, key\.pem[^)]*\): new files in place; .* keeps the ones it loaded/, 3000);
    const onDisk = new X509Certificate(fs.readFileSync(join(rt2, ks, 'enclaves', path, 'cert.pem')));
    assert.equal(onDisk.serialNumber.toUpperCase(), third);
    assert.equal(q.stdout().match(/loaded/g)?.length, 1, 'not restarted');
    q.child.kill('SIGTERM');
    await q.exited;
  });

  test('an enclave not bound to this robot, or a missing command, fails clearly', async () => {
    const { robot, stateDir, ks, enclave } = await robotWith();
    await fx.admin.createEnclave(ks, '/other');
    const rt = runtimeDir();
    const p = exec(stateDir, ['--enclave', `${ks}:/other`, '--runtime-dir', rt], ['true']);
    assert.equal((await p.exited).code, 3);
    assert.match(p.stderr(), new RegExp(`enclave ${ks}:/other is not bound to robot ${robot}`));
    const q = exec(stateDir, ['--enclave', enclave, '--runtime-dir', rt], ['/nonexistent/ros2-app']);
    assert.equal((await q.exited).code, 127);
    assert.match(q.stderr(), /cannot run \/nonexistent\/ros2-app: command not found/);
    assert.deepEqual(listTree(rt), []);
  });
});
