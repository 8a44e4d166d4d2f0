import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { assertNoSecretsIn } from './helpers/app.js';
import { CTL_MAIN, ctl, describeRun, mode, onTerminal, tempDir, type CtlResult } from './helpers/ctl.js';
import { startServer, type ServerProcess } from './helpers/server-process.js';
import { FIXTURES } from './helpers/tools.js';

const ADMIN_PW = 'admin-password-for-ctl';
const ACME_PW = 'acme-developer-password';
const FOUR = ['/fleet/amr_07/driver', '/fleet/amr_07/planner', '/thirdparty/acme/camera', '/thirdparty/other/lidar'];

/**
 * The seed scenario, driven only through `enclavectl` child processes against the real server: an admin
 * sets up a keystore, enclaves, a member and robots; the member sees and binds only what the grant allows.
 */
describe('enclavectl: the seed scenario against a real server', () => {
  const root = tempDir('enclavectl-scenario-');
  const dataDir = path.join(root, 'data');
  const adminHome = path.join(root, 'admin-home');
  const acmeHome = path.join(root, 'acme-home');
  const caFile = path.join(dataDir, 'tls', 'ca.cert.pem');
  const secrets = new Set<string>([ADMIN_PW, ACME_PW]);
  /** Everything the CLI printed, except `robot token` (printing a token is its job), checked for secrets at the end. */
  const printed: string[] = [];
  let server: ServerProcess;

  const run = async (home: string, args: string[], env: NodeJS.ProcessEnv = {}, keep = true): Promise<CtlResult> => {
    const r = await ctl(args, { home, env });
    if (keep) printed.push(r.stdout, r.stderr);
    return r;
  };
  const admin = (...args: string[]) => run(adminHome, args);
  const acme = (...args: string[]) => run(acmeHome, args);
  const ok = (r: CtlResult): CtlResult => {
    assert.equal(r.status, 0, describeRun(r));
    return r;
  };
  const json = (r: CtlResult): any => JSON.parse(ok(r).stdout);
  /** Every change is audited, so an unchanged chain head proves that nothing changed on the server. */
  const auditHead = async (): Promise<string> => json(await admin('audit', 'verify', '--json')).head;
  /** Destructive commands off a terminal without --yes: exit 2 naming --yes, nothing sent, nothing changed. */
  const refusedWithoutYes = async (commands: string[][]): Promise<void> => {
    const head = await auditHead();
    for (const args of commands) {
      const r = await admin(...args);
      assert.equal(r.status, 2, describeRun(r));
      assert.match(r.stderr, /^enclavectl: [^\n]+: add --yes to confirm\n$/, describeRun(r));
      assert.equal(r.stdout, '');
    }
    assert.equal(await auditHead(), head, 'a refused command changed something');
  };

  before(async () => {
    server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD: ADMIN_PW });
  });
  after(async () => {
    await server?.stop();
    try {
      // Tokens live in the config files only; none may reach the terminal or the server log.
      for (const home of [adminHome, acmeHome]) {
        const file = path.join(home, 'enclavectl', 'config.json');
        if (fs.existsSync(file)) secrets.add(JSON.parse(fs.readFileSync(file, 'utf8')).token);
      }
      assertNoSecretsIn(printed.join('\n'), secrets);
      assertNoSecretsIn(server?.logs() ?? '', secrets);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('login: a wrong password is refused (exit 3) and saves nothing', async () => {
    const r = await run(adminHome, ['login', '--server', server.url, '--ca', caFile, '--user', 'admin'], { ENCLAVECTL_PASSWORD: 'not-the-password' });
    assert.equal(r.status, 3, describeRun(r));
    assert.equal(r.stderr, 'enclavectl: invalid username or password\n');
    assert.equal(r.stdout, '');
    assert.ok(!fs.existsSync(path.join(adminHome, 'enclavectl', 'config.json')));
  });

  test('login as admin: session saved 0600 in a 0700 folder with the CA copied in; the token is not echoed', async () => {
    const r = ok(await run(adminHome, ['login', '--server', server.url, '--ca', caFile, '--user', 'admin'], { ENCLAVECTL_PASSWORD: ADMIN_PW }));
    assert.match(r.stdout, new RegExp(`^logged in to ${server.url.replace(/\./g, '\\.')} as admin \\(session until \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\)\\n$`));
    assert.equal(r.stderr, '');
    const dir = path.join(adminHome, 'enclavectl');
    const file = path.join(dir, 'config.json');
    assert.equal(mode(dir), 0o700);
    assert.equal(mode(file), 0o600);
    assert.deepEqual(fs.readdirSync(dir), ['config.json'], 'no temporary file left behind');
    const config = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(config.server, server.url);
    assert.equal(config.user, 'admin');
    assert.equal(config.ca.trim(), fs.readFileSync(caFile, 'utf8').trim());
    assert.match(config.token, /^eyJ/);
    assert.ok(!r.stdout.includes(config.token) && !r.stderr.includes(config.token));
    assert.ok(!JSON.stringify(config).includes(ADMIN_PW), 'the password is never stored');
  });

  test('keystore create, list and show', async () => {
    const created = ok(await admin('keystore', 'create', 'fleet', '--domain-id', '7'));
    assert.match(created.stdout, /^created keystore fleet\n/);
    assert.match(created.stdout, /^domain id: +7$/m);
    assert.match(created.stdout, /^CA: +CN=sros2CA \(identity and permissions\)$/m);
    const list = ok(await admin('keystore', 'list'));
    const lines = list.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^NAME +DOMAIN +CA +ORIGIN +MODE +IDENTITIES +REVOKED +CA EXPIRES$/);
    assert.match(lines[1]!, /^fleet +7 +shared +generated +issuing +shared +0 +\d{4}-/);
    // Columns line up: every row has DOMAIN where the header has it.
    assert.equal(lines[1]!.indexOf('7'), lines[0]!.indexOf('DOMAIN'));
    const shown = json(await admin('keystore', 'show', 'fleet', '--json'));
    assert.equal(shown.name, 'fleet');
    assert.equal(shown.domainId, 7);
    assert.match(shown.identityCa.certificate, /BEGIN CERTIFICATE/);
    const split = json(await admin('keystore', 'create', 'split', '--split-ca', '--validity-days', '30', '--json'));
    assert.equal(split.sharedCa, false);
    assert.notEqual(split.identityCa.fingerprintSha256, split.permissionsCa.fingerprintSha256);
  });

  test('the four seed enclaves in one batch command', async () => {
    const r = ok(await admin('enclave', 'create', 'fleet', ...FOUR));
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], 'created 4 enclaves in fleet');
    assert.match(lines[1]!, /^PATH +STATUS +SERIAL +NOT AFTER +PERMISSIONS$/);
    assert.deepEqual(lines.slice(2).map((l) => l.split(/ +/)[0]), FOUR);
    for (const l of lines.slice(2)) assert.match(l, / active +[0-9A-F]{40} +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +default$/);
    // Through the batch route (one transaction), not four single creations.
    const audit = json(await admin('audit', '--action', 'enclave.*', '--json'));
    assert.deepEqual(audit.entries.map((e: any) => e.action), Array(4).fill('enclave.batch-create'));
  });

  test('a member, a grant, two robots', async () => {
    const u = ok(await run(adminHome, ['user', 'create', 'acme', '--role', 'member'], { ENCLAVECTL_NEW_PASSWORD: ACME_PW }));
    assert.equal(u.stdout, 'created user acme (member)\n');
    const g = ok(await admin('grant', 'acme', 'fleet', '/thirdparty/acme/**', '--cap', 'read,bind', '--robot-selector', 'tenant=acme'));
    assert.match(g.stdout, /^granted read,bind on fleet:\/thirdparty\/acme\/\*\* to acme \(robots tenant=acme\): g_\S+\n$/);
    const grants = json(await admin('grant', 'list', '--json'));
    assert.deepEqual(
      grants.grants.map((x: any) => [x.user, x.keystore, x.pattern, x.capabilities, x.robotSelector]),
      [['acme', 'fleet', '/thirdparty/acme/**', ['read', 'bind'], { tenant: 'acme' }]],
    );
    assert.equal(ok(await admin('robot', 'create', 'r1', '--label', 'tenant=acme')).stdout, 'created robot r1 (labels: tenant=acme)\n');
    assert.equal(ok(await admin('robot', 'create', 'r2')).stdout, 'created robot r2 (labels: -)\n');
    const robots = ok(await admin('robot', 'list'));
    assert.match(robots.stdout, /^NAME +LABELS +ENROLLED +AGENT\nr1 +tenant=acme +no +-\nr2 +- +no +-\n$/);
    const users = ok(await admin('user', 'list'));
    assert.match(users.stdout, /^acme +member /m);
    assert.match(users.stdout, /^admin +admin /m);
  });

  test('acme (own config folder) sees only the camera, binds it to r1, is refused r2', async () => {
    ok(await run(acmeHome, ['login', '--server', server.url, '--ca', caFile, '--user', 'acme'], { ENCLAVECTL_PASSWORD: ACME_PW }));
    const list = ok(await acme('enclave', 'list', 'fleet'));
    const rows = list.stdout.trimEnd().split('\n');
    assert.equal(rows.length, 2, list.stdout);
    assert.match(rows[1]!, /^\/thirdparty\/acme\/camera +active /);
    const listed = json(await acme('enclave', 'list', 'fleet', '--json'));
    assert.deepEqual(listed.enclaves.map((e: any) => e.path), ['/thirdparty/acme/camera']);
    const bound = ok(await acme('bind', 'fleet', '/thirdparty/acme/camera', '--robot', 'r1'));
    assert.match(bound.stdout, /^b_[A-Za-z0-9_-]+\n$/, 'only the binding id');
    assert.equal(bound.stderr, '');
    const refused = await acme('bind', 'fleet', '/thirdparty/acme/camera', '--robot', 'r2');
    assert.equal(refused.status, 1, describeRun(refused));
    assert.equal(refused.stdout, '');
    assert.equal(refused.stderr, 'enclavectl: no robot "r2"\n');
    const hidden = await acme('enclave', 'show', 'fleet', '/fleet/amr_07/driver');
    assert.equal(hidden.status, 1);
    assert.match(hidden.stderr, /^enclavectl: .*\n$/);
    const adminOnly = await acme('keystore', 'create', 'mine');
    assert.equal(adminOnly.status, 1);
    assert.equal(adminOnly.stderr, 'enclavectl: only administrators may create keystores\n');
    const bindings = json(await admin('bindings', '--json'));
    assert.deepEqual(
      bindings.bindings.map((b: any) => [b.id, b.enclave, b.robot, b.createdBy]),
      [[bound.stdout.trim(), '/thirdparty/acme/camera', 'r1', 'acme']],
    );
  });

  test('robot token prints only the token', async () => {
    const r = await run(adminHome, ['robot', 'token', 'r1', '--ttl', '600'], {}, false);
    assert.equal(r.status, 0, describeRun(r));
    assert.match(r.stdout, /^et_[A-Za-z0-9_-]{20,}\n$/);
    assert.equal(r.stderr, '');
    secrets.add(r.stdout.trim());
  });

  test('enclave create --policy with an sros2 policy: the xi:includes are packed and resolved', async () => {
    const policy = path.join(FIXTURES, 'policies', 'talker_listener.policy.xml');
    const r = ok(await admin('enclave', 'create', 'fleet', '/talker_listener/talker', '--policy', policy));
    assert.match(r.stdout, /^created enclave fleet:\/talker_listener\/talker\n/);
    assert.match(r.stdout, / policy\n$/);
    assert.equal(r.stderr, 'policy talker_listener.policy.xml: sending it with 4 included file(s)\n');
    const e = json(await admin('enclave', 'show', 'fleet', '/talker_listener/talker', '--json'));
    assert.equal(e.permissionsSource, 'policy');
    // rosout comes from common/node/logging.xml, two includes deep; chatter from the main file.
    assert.match(e.permissionsXml, /rt\/rosout/);
    assert.match(e.permissionsXml, /rt\/chatter/);
    assert.match(e.policyXml, /<topic>rosout<\/topic>/);
    const sample = ok(await admin('enclave', 'create', 'fleet', '/sample_policy/admin', '--policy', path.join(FIXTURES, 'policies', 'sample.policy.xml')));
    assert.match(sample.stdout, /\/sample_policy\/admin +active /);
    const cert = ok(await admin('enclave', 'show', 'fleet', '/talker_listener/talker', '--cert'));
    assert.match(cert.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    // Replacing the policy later takes the same kinds of file.
    const changed = ok(await admin('enclave', 'policy', 'fleet', '/talker_listener/talker', path.join(FIXTURES, 'policies', 'sample.policy.xml')));
    assert.match(changed.stdout, /^permissions of fleet:\/talker_listener\/talker replaced and re-signed/);
    const missing = await admin('enclave', 'policy', 'fleet', '/fleet/amr_07/driver', path.join(FIXTURES, 'policies', 'add_two_ints.policy.xml'));
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /^enclavectl: the policy has no <enclave path="\/fleet\/amr_07\/driver">\n$/m);
  });

  test('keystore import from the sros2 fixture: an extracted folder (symlinks kept) and the .tar.gz', async () => {
    const dir = path.join(root, 'fixture');
    fs.mkdirSync(dir);
    execFileSync('tar', ['-xzf', path.join(FIXTURES, 'talker-listener-keystore.tar.gz'), '-C', dir]);
    assert.ok(fs.lstatSync(path.join(dir, 'keystore', 'public', 'identity_ca.cert.pem')).isSymbolicLink());
    const folder = ok(await admin('keystore', 'import', 'tl_folder', path.join(dir, 'keystore')));
    assert.match(folder.stdout, /^imported keystore tl_folder \(2 enclaves\)\n/);
    assert.match(folder.stdout, /^origin: +imported$/m);
    assert.equal(folder.stderr, '', 'no progress bar when stderr is not a terminal');
    const archive = ok(await admin('keystore', 'import', 'tl_archive', path.join(FIXTURES, 'talker-listener-keystore.tar.gz'), '--json'));
    const k = JSON.parse(archive.stdout);
    assert.equal(k.name, 'tl_archive');
    assert.equal(k.enclaves, 2);
    const enclaves = json(await admin('enclave', 'list', 'tl_folder', '--json'));
    assert.deepEqual(enclaves.enclaves.map((e: any) => e.path).sort(), ['/talker_listener/listener', '/talker_listener/talker']);
    const again = await admin('keystore', 'import', 'tl_folder', path.join(dir, 'keystore'));
    assert.equal(again.status, 1);
    assert.match(again.stderr, /^enclavectl: .*tl_folder.*\n$/);
  });

  test('keystore export writes a valid .tar.gz (0600) in sros2 layout; CA keys only with --private', async () => {
    const out = path.join(root, 'fleet.tar.gz');
    const r = ok(await admin('keystore', 'export', 'fleet', out));
    assert.match(r.stdout, /^wrote .*fleet\.tar\.gz \(\d+ bytes\)\n$/);
    assert.equal(mode(out), 0o600);
    const names = execFileSync('tar', ['-tzf', out], { encoding: 'utf8' }).split('\n');
    assert.ok(names.includes('keystore/enclaves/fleet/amr_07/driver/cert.pem'), names.join('\n'));
    assert.ok(names.includes('keystore/public/ca.cert.pem'));
    assert.ok(!names.some((n) => /private\/ca\.key\.pem$/.test(n)), 'no CA key without --private');
    const x = path.join(root, 'x');
    fs.mkdirSync(x);
    execFileSync('tar', ['-xzf', out, '-C', x]);
    assert.ok(fs.lstatSync(path.join(x, 'keystore', 'public', 'identity_ca.cert.pem')).isSymbolicLink());
    const exists = await admin('keystore', 'export', 'fleet', out);
    assert.equal(exists.status, 2);
    assert.match(exists.stderr, /exists \(use --force to replace it\)/);
    const priv = path.join(root, 'fleet-private.tar.gz');
    const forced = ok(await admin('keystore', 'export', 'fleet', priv, '--private', '--progress'));
    assert.match(forced.stdout, /with CA private keys/);
    assert.match(forced.stderr, /^downloading fleet .*100%/m, 'forced progress on a pipe');
    assert.ok(execFileSync('tar', ['-tzf', priv], { encoding: 'utf8' }).includes('keystore/private/ca.key.pem'));
    // The export round-trips: it imports as a keystore of its own.
    const back = ok(await admin('keystore', 'import', 'fleet_copy', out));
    assert.match(back.stdout, /^imported keystore fleet_copy \(\d+ enclaves\)/);
  });

  test('rotate, revoke, delete, unbind (the last three only with --yes off a terminal)', async () => {
    const before = json(await admin('enclave', 'show', 'fleet', '/fleet/amr_07/planner', '--json'));
    const rotated = ok(await admin('enclave', 'rotate', 'fleet', '/fleet/amr_07/planner', '--validity-days', '30'));
    assert.match(rotated.stdout, /^rotated fleet:\/fleet\/amr_07\/planner: serial [0-9A-F]{40}, valid until /);
    assert.ok(!rotated.stdout.includes(before.serial));
    const id = json(await admin('bindings', '--json')).bindings[0].id;
    await refusedWithoutYes([
      ['enclave', 'revoke', 'fleet', '/thirdparty/other/lidar'],
      ['enclave', 'delete', 'fleet', '/fleet/amr_07/planner'],
      ['unbind', id],
    ]);
    const revoked = json(await admin('enclave', 'revoke', 'fleet', '/thirdparty/other/lidar', '--json', '--yes'));
    assert.equal(revoked.status, 'revoked');
    assert.equal(ok(await admin('enclave', 'delete', 'fleet', '/fleet/amr_07/planner', '--yes')).stdout, 'deleted fleet:/fleet/amr_07/planner\n');
    assert.equal(ok(await admin('unbind', id, '--yes')).stdout, `removed binding ${id}\n`);
    assert.equal(ok(await admin('bindings')).stderr, 'no bindings\n');
  });

  test('audit lists what happened; audit verify says the chain is intact', async () => {
    const a = ok(await admin('audit', '--limit', '500'));
    const lines = a.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^ID +AT +ACTOR +ACTION +TARGET +RESULT +VIA +DETAILS$/);
    assert.ok(lines.some((l) => /\bacme +binding\.create\b.*grant:g_/.test(l)), a.stdout);
    const filtered = json(await admin('audit', '--actor', 'acme', '--action', 'binding.*', '--since', '1h', '--json'));
    assert.ok(filtered.entries.length >= 1);
    for (const e of filtered.entries) {
      assert.equal(e.actor, 'acme');
      assert.match(e.action, /^binding\./);
    }
    const v = ok(await admin('audit', 'verify'));
    assert.match(v.stdout, /^audit chain intact: \d+ entries, head [0-9a-f]{64}\n$/);
    const vj = json(await admin('audit', 'verify', '--json'));
    assert.equal(vj.ok, true);
    const member = await acme('audit');
    assert.equal(member.status, 1, 'admin only');
  });

  test('--json prints the API JSON for every listing', async () => {
    const cases: [string[], string][] = [
      [['keystore', 'list', '--json'], 'keystores'],
      [['enclave', 'list', 'fleet', '--json'], 'enclaves'],
      [['robot', 'list', '--json'], 'robots'],
      [['user', 'list', '--json'], 'users'],
      [['grant', 'list', '--json'], 'grants'],
      [['bindings', '--json'], 'bindings'],
      [['audit', '--json', '--limit', '3'], 'entries'],
    ];
    for (const [args, key] of cases) {
      const body = json(await admin(...args));
      assert.ok(Array.isArray(body[key]), `${args.join(' ')} → ${key}[]`);
    }
    const robot = json(await admin('robot', 'show', 'r1', '--json'));
    assert.equal(robot.name, 'r1');
    assert.equal(robot.report, null);
    const token = json(await run(adminHome, ['robot', 'token', 'r2', '--json'], {}, false));
    assert.match(token.token, /^et_/);
    secrets.add(token.token);
    assert.ok(!Number.isNaN(Date.parse(token.expiresAt)));
  });

  test('robot labels, key revocation, user update and delete, grant delete (destructive ones only with --yes)', async () => {
    assert.equal(ok(await admin('robot', 'set-labels', 'r2', 'tenant=other', 'site=tokyo')).stdout, 'robot r2 labels: tenant=other,site=tokyo\n');
    assert.match(ok(await admin('robot', 'show', 'r2')).stdout, /^labels: +tenant=other,site=tokyo$/m);
    await refusedWithoutYes([['robot', 'revoke-key', 'r2']]);
    assert.equal(ok(await admin('robot', 'revoke-key', 'r2', '--yes')).stdout, 'device key of r2 revoked: it must enroll again\n');
    const upd = ok(await run(adminHome, ['user', 'update', 'acme', '--password'], { ENCLAVECTL_NEW_PASSWORD: 'acme-second-password' }));
    secrets.add('acme-second-password');
    assert.equal(upd.stdout, 'updated user acme (member, new password)\n');
    // The password change ended acme's session.
    const stale = await acme('enclave', 'list', 'fleet');
    assert.equal(stale.status, 3, describeRun(stale));
    assert.equal(stale.stderr, 'enclavectl: session no longer valid (password or role changed, or user deleted): run enclavectl login\n');
    const id = json(await admin('grant', 'list', '--user', 'acme', '--json')).grants[0].id;
    await refusedWithoutYes([['grant', 'delete', id], ['user', 'delete', 'acme'], ['robot', 'delete', 'r2'], ['keystore', 'delete', 'split']]);
    assert.equal(ok(await admin('grant', 'delete', id, '--yes')).stdout, `deleted grant ${id}\n`);
    assert.equal(ok(await admin('user', 'delete', 'acme', '--yes')).stdout, 'deleted user acme\n');
    assert.equal(ok(await admin('robot', 'delete', 'r2', '--yes')).stdout, 'deleted robot r2\n');
    assert.equal(ok(await admin('keystore', 'delete', 'split', '--yes')).stdout, 'deleted keystore split\n');
  });

  test('on a terminal a destructive command asks: "n" changes nothing, "y" goes ahead', async (t) => {
    ok(await admin('enclave', 'create', 'fleet', '/scratch/asked'));
    const argv = [process.execPath, '--import', 'tsx', CTL_MAIN, 'enclave', 'delete', 'fleet', '/scratch/asked'];
    const question = 'deleting fleet:/scratch/asked revokes it and removes its bindings: robots lose it at once. Go ahead? [y/N] ';
    const head = await auditHead();
    const no = await onTerminal(argv, { XDG_CONFIG_HOME: adminHome }, 'Go ahead? [y/N] ', 'n');
    if (!no) return t.skip('python3 (pty) not available');
    assert.equal(no.status, 1, no.screen);
    assert.ok(no.screen.includes(question), no.screen);
    assert.match(no.screen, /enclavectl: cancelled: nothing was changed/);
    assert.equal(await auditHead(), head);
    assert.equal(json(await admin('enclave', 'show', 'fleet', '/scratch/asked', '--json')).status, 'active');
    const yes = (await onTerminal(argv, { XDG_CONFIG_HOME: adminHome }, 'Go ahead? [y/N] ', 'y'))!;
    assert.equal(yes.status, 0, yes.screen);
    assert.match(yes.screen, /deleted fleet:\/scratch\/asked/);
    assert.equal((await admin('enclave', 'show', 'fleet', '/scratch/asked')).status, 1, 'gone');
  });
});
