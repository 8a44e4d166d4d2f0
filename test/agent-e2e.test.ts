/**
 * The robot agent against the real server (`server/main.ts serve`, HTTPS with its self-generated CA, driven
 * through its HTTP API): enroll → run → files, SIGTERM purge, stale tree after SIGKILL, revocation and
 * unbinding within 2 s, rotation, server down at start, device deletion, exec, and two agents whose
 * enclaves authenticate each other in real DDS (dds-pair-check.sh). The enclaves' permissions come from
 * sros2's own talker_listener policy with its xi:includes (`common/`), sent as a policy folder archive.
 * Skipped while the server is not in the tree.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Admin, serverBuilt, startServer, waitForReport, tearDownAgentTest, type RealServer } from './helpers/agent-server.js';
import { FIXTURE_KEYSTORE, talkerListenerPolicyArchive } from './helpers/agent-keystore.js';
import { enrollAgent, exists, listTree, runAgent, shmDir, spawnAgent, waitUntil, type AgentProc } from './helpers/agent-proc.js';
import { DDS_PAIR_CHECK, ddsUnavailable } from './helpers/tools.js';

const RUNTIME_FILES = ['cert.pem', 'governance.p7s', 'identity_ca.cert.pem', 'key.pem', 'permissions.p7s', 'permissions_ca.cert.pem'];
const KS = 'e2e';
/** A second keystore for the DDS pair, whose talker and listener are never rotated or revoked. */
const PAIR_KS = 'e2e_pair';
const TALKER = '/talker_listener/talker';
const LISTENER = '/talker_listener/listener';
const skip = serverBuilt() ? false : 'server not built yet';
const base = fs.mkdtempSync(join(tmpdir(), 'agent-e2e-'));
const shm: string[] = [];
const procs: AgentProc[] = [];
let server: RealServer;
let admin: Admin;
let seq = 0;

before(async () => {
  if (skip) return;
  server = await startServer({ dataDir: join(base, 'data'), restartable: true });
  admin = await Admin.login(server);
  await admin.createKeystore(KS);
  const policy = { policyArchive: talkerListenerPolicyArchive() };
  await admin.createEnclave(KS, TALKER, policy);
  await admin.createEnclave(KS, LISTENER, policy);
});
after(() => tearDownAgentTest({ procs, admin, server, dirs: [base, ...shm] }));

function runtimeDir(): string {
  const d = shmDir('agent-e2e');
  shm.push(d);
  return d;
}

/** A new robot on the server, enrolled by the agent into a fresh state folder. */
async function newRobot(bind: string[] = [], ks = KS): Promise<{ robot: string; stateDir: string; bindings: string[] }> {
  const robot = `e2e_robot_${++seq}`;
  await admin.createRobot(robot, { site: 'e2e' });
  const bindings: string[] = [];
  for (const path of bind) bindings.push(await admin.bind(ks, path, robot));
  const stateDir = await enrollAgent({ base, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken(robot) });
  return { robot, stateDir, bindings };
}

function run(stateDir: string, rt: string, extra: string[] = []): AgentProc {
  const p = spawnAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0', '--backoff-base', '0.2', '--backoff-max', '1', ...extra]);
  procs.push(p);
  return p;
}

const enclaveDir = (rt: string, path: string, ks = KS): string => join(rt, ks, 'enclaves', path);

/** A permissions document without its `<validity>` (the dates differ per issue), whitespace between tags dropped. */
const rulesOf = (xml: string): string => xml.replace(/<validity>[\s\S]*?<\/validity>/g, '').replace(/>\s+</g, '><').trim();

describe('agent against the real server', { skip }, () => {
  test('enroll → run → verified enclave files on tmpfs, report, SIGTERM purges and exits 0', async () => {
    const { robot, stateDir } = await newRobot([TALKER]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready: holding 1 enclave/, 15_000);
    const dir = enclaveDir(rt, TALKER);
    const files = fs.readdirSync(dir).sort();
    assert.deepEqual(files.filter((f) => f !== 'crl.pem'), RUNTIME_FILES);
    for (const f of files) assert.equal(fs.statSync(join(dir, f)).mode & 0o777, 0o600, f);
    execFileSync('openssl', ['verify', '-CAfile', join(dir, 'identity_ca.cert.pem'), join(dir, 'cert.pem')], { stdio: 'pipe' });
    const subject = execFileSync('openssl', ['x509', '-noout', '-subject', '-in', join(dir, 'cert.pem')], { encoding: 'utf8' });
    assert.match(subject, new RegExp(`CN ?= ?${TALKER}`));
    // The permissions were made from the policy *with* its includes: the same rules sros2 made from it.
    const signed = execFileSync('openssl', ['smime', '-verify', '-in', join(dir, 'permissions.p7s'), '-CAfile', join(dir, 'permissions_ca.cert.pem'), '-text'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const bySros2 = execFileSync('tar', ['-xzOf', FIXTURE_KEYSTORE, 'keystore/enclaves/talker_listener/talker/permissions.xml'], { encoding: 'utf8' });
    assert.match(signed, /<topic>rt\/rosout<\/topic>/, 'a topic that only common/node/logging.xml grants');
    assert.equal(rulesOf(signed), rulesOf(bySros2));

    const shown = await waitForReport(admin, robot);
    assert.equal(shown.filesystem, 'tmpfs');

    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
    assert.deepEqual(listTree(rt), []);
  });

  test('SIGKILL leaves a stale tree that the next start purges', async () => {
    const { stateDir } = await newRobot([TALKER]);
    const rt = runtimeDir();
    const p1 = run(stateDir, rt);
    await p1.waitForLog(/ready/, 15_000);
    p1.child.kill('SIGKILL');
    await p1.exited;
    assert.ok(exists(join(enclaveDir(rt, TALKER), 'key.pem')));
    const p2 = run(stateDir, rt);
    await p2.waitForLog(/ready/, 15_000);
    assert.match(p2.stderr(), /removed 1 keystore\(s\) left/);
    p2.child.kill('SIGTERM');
    assert.equal((await p2.exited).code, 0);
    assert.deepEqual(listTree(rt), []);
  });

  test('rotation within 2 s; revocation and unbinding remove the enclave within 2 s', async () => {
    const { stateDir, bindings } = await newRobot([TALKER, LISTENER]);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready: holding 2 enclave/, 15_000);
    const certPath = join(enclaveDir(rt, LISTENER), 'cert.pem');
    const before = fs.readFileSync(certPath, 'utf8');
    await admin.rotate(KS, LISTENER);
    const rotated = await waitUntil('rotated certificate', () => fs.readFileSync(certPath, 'utf8') !== before, 2000);
    assert.ok(rotated <= 2000);

    await admin.unbind(bindings[1]!);
    await waitUntil('unbound enclave removed', () => !exists(enclaveDir(rt, LISTENER)), 2000);

    const t0 = Date.now();
    await admin.revoke(KS, TALKER);
    await waitUntil('revoked enclave removed', () => !exists(enclaveDir(rt, TALKER)), 2000);
    assert.ok(Date.now() - t0 <= 2000);
    assert.equal(p.child.exitCode, null, 'still running, waiting for enclaves');
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
    // Later tests need a talker: make a fresh one (the revoked path stays revoked).
  });

  test('server down at start: jittered retries, never ready without enclaves, catches up when it returns', async () => {
    await admin.createEnclave(KS, '/late/node');
    const { stateDir } = await newRobot(['/late/node']);
    const port = server.port;
    admin.close();
    await server.stop();
    const rt = runtimeDir();
    const p = run(stateDir, rt, ['--backoff-base', '0.1', '--backoff-max', '1']);
    try {
      await waitUntil('retries', () => (p.stderr().match(/retrying in/g) ?? []).length >= 3, 15_000);
      assert.ok(!p.stderr().includes('ready'));
      assert.deepEqual(listTree(rt).filter((f) => f !== '.status.json' && f !== '.lock'), []);
    } finally {
      server = await startServer({ dataDir: server.dataDir, port });
      admin = await Admin.login(server);
    }
    await p.waitForLog(/ready/, 15_000);
    assert.ok(exists(join(enclaveDir(rt, '/late/node'), 'key.pem')));
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('a deleted robot: the agent purges and exits 3', async () => {
    await admin.createEnclave(KS, '/doomed/node');
    const { robot, stateDir } = await newRobot(['/doomed/node']);
    const rt = runtimeDir();
    const p = run(stateDir, rt);
    await p.waitForLog(/ready/, 15_000);
    await admin.deleteRobot(robot);
    const { code } = await waitExit(p, 10_000);
    assert.equal(code, 3, p.stderr());
    assert.deepEqual(listTree(rt), []);
  });

  test('exec runs the command with the ROS variables and exits with its code', async () => {
    await admin.createEnclave(KS, '/exec/node');
    const { stateDir } = await newRobot(['/exec/node']);
    const rt = runtimeDir();
    const r = await runAgent(
      ['exec', '--state-dir', stateDir, '--runtime-dir', rt, '--enclave', `${KS}:/exec/node`, '--', 'sh', '-c',
        'ls "$ROS_SECURITY_KEYSTORE/enclaves$ROS_SECURITY_ENCLAVE_OVERRIDE"; echo "$ROS_SECURITY_ENABLE $ROS_SECURITY_STRATEGY"; exit 5'],
      { timeoutMs: 30_000 },
    );
    assert.equal(r.code, 5, r.stderr);
    for (const f of RUNTIME_FILES) assert.match(r.stdout, new RegExp(`^${f.replace('.', '\\.')}$`, 'm'));
    assert.match(r.stdout, /^true Enforce$/m);
    assert.deepEqual(listTree(rt), []);
  });

  test('two agents: their enclaves talk secure DDS to each other (dds-pair-check)', { skip: ddsUnavailable() ?? false }, async () => {
    await admin.createKeystore(PAIR_KS);
    const policy = { policyArchive: talkerListenerPolicyArchive() };
    await admin.createEnclave(PAIR_KS, TALKER, policy);
    await admin.createEnclave(PAIR_KS, LISTENER, policy);
    const a = await newRobot([TALKER], PAIR_KS);
    const b = await newRobot([LISTENER], PAIR_KS);
    const rtA = runtimeDir();
    const rtB = runtimeDir();
    const pa = run(a.stateDir, rtA);
    const pb = run(b.stateDir, rtB);
    await Promise.all([pa.waitForLog(/ready/, 15_000), pb.waitForLog(/ready/, 15_000)]);
    assert.ok(!exists(enclaveDir(rtA, LISTENER, PAIR_KS)), 'each robot holds only its own enclave');
    const check = spawnSync(DDS_PAIR_CHECK, ['-T', 'rt/chatter', '--roles', 'pub,sub', enclaveDir(rtA, TALKER, PAIR_KS), enclaveDir(rtB, LISTENER, PAIR_KS)], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /^OK: /m);
    pa.child.kill('SIGTERM');
    pb.child.kill('SIGTERM');
    assert.equal((await pa.exited).code, 0);
    assert.equal((await pb.exited).code, 0);
  });
});

async function waitExit(p: AgentProc, ms: number): Promise<{ code: number | null }> {
  const timer = setTimeout(() => p.child.kill('SIGKILL'), ms);
  const r = await p.exited;
  clearTimeout(timer);
  return r;
}
