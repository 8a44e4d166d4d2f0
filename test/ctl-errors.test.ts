import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CTL_MAIN, closedPort, ctl, describeRun, mode, onTerminal, tempDir, type CtlResult } from './helpers/ctl.js';
import { startServer, type ServerProcess } from './helpers/server-process.js';

const ADMIN_PW = 'admin-password-for-errors';

/** Bad input, lost servers and dead sessions: each must end in one clear line and a documented exit code. */
describe('enclavectl: errors and exit codes against a real server', () => {
  const root = tempDir('enclavectl-errors-');
  const dataDir = path.join(root, 'data');
  const caFile = path.join(dataDir, 'tls', 'ca.cert.pem');
  const home = path.join(root, 'home');
  let server: ServerProcess;
  const admin = (...args: string[]): Promise<CtlResult> => ctl(args, { home });
  const login = (h: string, url: string, extra: string[] = [], password = ADMIN_PW) =>
    ctl(['login', '--server', url, '--ca', caFile, '--user', 'admin', ...extra], { home: h, env: { ENCLAVECTL_PASSWORD: password } });
  /** stderr is exactly one `enclavectl: ` line matching `re`. */
  const oneLine = (r: CtlResult, status: number, re: RegExp): void => {
    assert.equal(r.status, status, describeRun(r));
    assert.match(r.stderr, /^enclavectl: [^\n]+\n$/, describeRun(r));
    assert.match(r.stderr, re);
    assert.equal(r.stdout, '');
  };

  before(async () => {
    server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD: ADMIN_PW });
    const r = await login(home, server.url);
    assert.equal(r.status, 0, describeRun(r));
    assert.equal((await admin('keystore', 'create', 'site')).status, 0);
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('unknown keystore: exit 1, the message names it', async () => {
    oneLine(await admin('enclave', 'list', 'nope'), 1, /^enclavectl: no keystore "nope"\n$/);
    oneLine(await admin('enclave', 'create', 'nope', '/a/b'), 1, /"nope"/);
    oneLine(await admin('keystore', 'export', 'nope', path.join(root, 'nope.tar.gz')), 1, /"nope"/);
    assert.ok(!fs.existsSync(path.join(root, 'nope.tar.gz')), 'no file for a failed export');
    assert.deepEqual(fs.readdirSync(root).filter((n) => n.includes('part')), [], 'no partial download left');
  });

  test('invalid enclave name: exit 1, the message names the rule', async () => {
    oneLine(await admin('enclave', 'create', 'site', '/1bad'), 1, /enclave name segment '1bad' must not start with a digit/);
    const batch = await admin('enclave', 'create', 'site', '/ok_one', '/bad-dash');
    assert.equal(batch.status, 1, describeRun(batch));
    assert.match(batch.stderr, /^enclavectl: .*bad-dash.*\n/);
    const list = JSON.parse((await admin('enclave', 'list', 'site', '--json')).stdout);
    assert.deepEqual(list.enclaves, [], 'a batch is all or nothing');
  });

  test('a batch split in chunks says where it stopped', async () => {
    const r = await admin('enclave', 'create', 'site', '/c/a', '/c/b', '/c/c', '/c/1x', '--chunk-size', '2');
    assert.equal(r.status, 1, describeRun(r));
    assert.match(r.stderr, /must not start with a digit \(the first 2 of 4 enclaves were created; none after\)\n$/);
    const many = await admin('enclave', 'create', 'site', ...Array.from({ length: 7 }, (_, i) => `/many/e_${i}`), '--chunk-size', '3', '--progress', '--json');
    assert.equal(many.status, 0, describeRun(many));
    assert.equal(JSON.parse(many.stdout).created, 7);
    assert.match(many.stderr, /creating enclaves in site .* 0% 0\/7\n[\s\S]*100% 7\/7\n$/);
    const dup = await admin('enclave', 'create', 'site', '/d/a', '/d/a');
    assert.equal(dup.status, 2);
    assert.match(dup.stderr, /\/d\/a is given twice/);
  });

  test('usage errors exit 2 before anything is sent', async () => {
    oneLine(await admin('keystore', 'create', 'x', '--domain-id', 'abc'), 2, /--domain-id.*expected a whole number/);
    oneLine(await admin('bind', 'site', '/a', '--robot', 'r1', '--selector', 'a=b'), 2, /either --robot NAME or --selector k=v/);
    oneLine(await admin('bind', 'site', '/a'), 2, /either --robot NAME or --selector k=v/);
    oneLine(await admin('robot', 'create', 'r9', '--label', 'novalue'), 2, /expected key=value/);
    oneLine(await admin('grant', 'u', 'site', '/**', '--cap', 'read,own'), 2, /unknown capability own/);
    oneLine(await admin('keystore', 'import', 'x', path.join(root, 'missing')), 2, /missing: no such file or folder/);
    oneLine(await admin('enclave', 'create', 'site', '/p', '--policy', path.join(root, 'none.xml')), 2, /cannot read policy .*none\.xml: no such file/);
    oneLine(await admin('audit', '--since', 'yesterday-ish'), 2, /--since.*ISO 8601/);
    oneLine(await admin('frobnicate'), 2, /unknown command 'frobnicate'/);
    oneLine(await admin('user', 'create', 'someone'), 2, /no password: set ENCLAVECTL_NEW_PASSWORD/);
    const help = await admin('--help');
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Exit codes:\n {2}0 {2}success/);
  });

  test('other refusals: exit 1 with the server message, details listed under it', async () => {
    oneLine(await admin('robot', 'show', 'ghost'), 1, /ghost/);
    const weak = await ctl(['user', 'create', 'weak'], { home, env: { ENCLAVECTL_NEW_PASSWORD: 'short' } });
    oneLine(weak, 1, /password/);
    const bad = path.join(root, 'bad-keystore');
    fs.mkdirSync(path.join(bad, 'public'), { recursive: true });
    fs.writeFileSync(path.join(bad, 'public', 'ca.cert.pem'), 'not a certificate');
    const imp = await admin('keystore', 'import', 'broken', bad);
    assert.equal(imp.status, 1, describeRun(imp));
    assert.match(imp.stderr, /^enclavectl: [^\n]+\n( {2}[^\n]+\n)+$/, 'the problems, one per line');
  });

  test('not logged in: exit 3 pointing at login', async () => {
    const r = await ctl(['keystore', 'list'], { home: path.join(root, 'fresh') });
    oneLine(r, 3, /^enclavectl: not logged in: run enclavectl login --server URL --ca FILE --user NAME\n$/);
  });

  test('wrong password at login: exit 3, the session on disk is kept as it was', async () => {
    const before = fs.readFileSync(path.join(home, 'enclavectl', 'config.json'), 'utf8');
    oneLine(await login(home, server.url, [], 'wrong-password-here'), 3, /^enclavectl: invalid username or password\n$/);
    assert.equal(fs.readFileSync(path.join(home, 'enclavectl', 'config.json'), 'utf8'), before);
  });

  test('a CA that did not sign the server: exit 4, a TLS message', async () => {
    const other = path.join(root, 'other-ca.pem');
    // Any valid certificate that is not the server's CA: the keystore's own CA will do.
    const ks = JSON.parse((await admin('keystore', 'show', 'site', '--json')).stdout);
    fs.writeFileSync(other, ks.identityCa.certificate);
    const r = await ctl(['login', '--server', server.url, '--ca', other, '--user', 'admin'], { home: path.join(root, 'tls'), env: { ENCLAVECTL_PASSWORD: ADMIN_PW } });
    oneLine(r, 4, /^enclavectl: TLS verification of https:\/\/127\.0\.0\.1:\d+ failed: the server certificate is not signed by the pinned CA/);
    const notPem = path.join(root, 'not.pem');
    fs.writeFileSync(notPem, 'hello');
    oneLine(await ctl(['login', '--server', server.url, '--ca', notPem, '--user', 'admin'], { home: path.join(root, 'tls') }), 2, /no PEM certificate/);
    oneLine(await ctl(['login', '--server', 'http://192.0.2.10:8080', '--user', 'admin'], { home: path.join(root, 'tls') }), 2, /refusing plain http/);
  });

  test('server unreachable (closed port): exit 4, the URL named', async () => {
    const port = await closedPort();
    const url = `https://127.0.0.1:${port}`;
    const r = await ctl(['login', '--server', url, '--ca', caFile, '--user', 'admin'], { home: path.join(root, 'closed'), env: { ENCLAVECTL_PASSWORD: ADMIN_PW } });
    oneLine(r, 4, new RegExp(`^enclavectl: cannot reach ${url.replace(/\./g, '\\.')}: connection refused`));
  });

  test('the password prompt on a terminal does not echo', async (t) => {
    const h = path.join(root, 'tty');
    const res = await onTerminal(
      [process.execPath, '--import', 'tsx', CTL_MAIN, 'login', '--server', server.url, '--ca', caFile, '--user', 'admin'],
      { XDG_CONFIG_HOME: h, ENCLAVECTL_PASSWORD: '' },
      'Password for admin: ',
      ADMIN_PW,
    );
    if (!res) return t.skip('python3 (pty) not available');
    assert.equal(res.status, 0, res.screen);
    assert.match(res.screen, /Password for admin: /);
    assert.match(res.screen, /logged in to /);
    assert.ok(!res.screen.includes(ADMIN_PW), `password echoed:\n${res.screen}`);
    assert.equal(mode(path.join(h, 'enclavectl', 'config.json')), 0o600);
  });

  // Last: it stops the server.
  test('server stopped: exit 4, the URL named', async () => {
    await server.stop();
    const r = await admin('keystore', 'list');
    oneLine(r, 4, new RegExp(`^enclavectl: cannot reach ${server.url.replace(/\./g, '\\.')}: connection refused`));
  });
});

describe('enclavectl: an expired session', () => {
  const root = tempDir('enclavectl-expiry-');
  const dataDir = path.join(root, 'data');
  let server: ServerProcess;
  before(async () => {
    server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD: ADMIN_PW, ENCLAVE_TOKEN_TTL_SECONDS: '2' });
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('exit 3 and "session expired: run enclavectl login"; login again fixes it', async () => {
    const home = path.join(root, 'home');
    const env = { ENCLAVECTL_PASSWORD: ADMIN_PW };
    const args = ['login', '--server', server.url, '--ca', path.join(dataDir, 'tls', 'ca.cert.pem'), '--user', 'admin'];
    assert.equal((await ctl(args, { home, env })).status, 0);
    assert.equal((await ctl(['keystore', 'list'], { home })).status, 0);
    // The server accepts tokens up to 5 s past `exp` (clock tolerance), so wait that out too.
    const { expiresAt } = JSON.parse(fs.readFileSync(path.join(home, 'enclavectl', 'config.json'), 'utf8'));
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(expiresAt) + 6_500 - Date.now())));
    const r = await ctl(['keystore', 'list'], { home });
    assert.equal(r.status, 3, describeRun(r));
    assert.equal(r.stderr, 'enclavectl: session expired: run enclavectl login\n');
    // A second login needs no flags: server, CA and user are remembered.
    const again = await ctl(['login'], { home, env });
    assert.equal(again.status, 0, describeRun(again));
    assert.equal((await ctl(['keystore', 'list'], { home })).status, 0);
  });
});
