import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertNoSecretsIn } from './helpers/app.js';
import { pinnedRequest, readCa, startServer } from './helpers/server-process.js';
import { REPO } from './helpers/tools.js';

const mode = (p: string) => fs.statSync(p).mode & 0o777;

describe('the real server process', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-proc-'));
  const dataDir = path.join(root, 'data');
  const secrets = new Set<string>();
  const allLogs: string[] = [];
  after(() => {
    assertNoSecretsIn(allLogs.join('\n'), secrets);
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('first start creates data, TLS, master key and the first admin; HTTPS verifies with the pinned CA', async () => {
    const server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0']);
    try {
      assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(mode(dataDir), 0o700);
      assert.equal(mode(path.join(dataDir, 'master.key')), 0o600);
      assert.equal(mode(path.join(dataDir, 'jwt.secret')), 0o600);
      assert.equal(mode(path.join(dataDir, 'enclaves.db')), 0o600);
      assert.equal(mode(path.join(dataDir, 'initial-admin-password')), 0o600);
      assert.equal(mode(path.join(dataDir, 'tls', 'server.key.pem')), 0o600);
      assert.doesNotMatch(fs.readFileSync(path.join(dataDir, 'tls', 'ca.key.sealed'), 'utf8'), /PRIVATE KEY/, 'TLS CA key sealed');
      const password = fs.readFileSync(path.join(dataDir, 'initial-admin-password'), 'utf8').trim();
      secrets.add(password);
      assert.ok(server.logs().includes('initial-admin-password'), 'the password file path is logged');
      const ca = readCa(dataDir);
      assert.deepEqual((await pinnedRequest(`${server.url}/health`, ca)).body, { status: 'ok' });
      const port = new URL(server.url).port;
      // curl, as the README says, against the name "localhost" (a SAN of the certificate).
      const curl = spawnSync('curl', ['-sS', '--cacert', path.join(dataDir, 'tls', 'ca.cert.pem'), `https://localhost:${port}/health`], { encoding: 'utf8' });
      if (curl.error === undefined) assert.equal(curl.stdout, '{"status":"ok"}', curl.stderr);
      // Without the pinned CA (Node's public roots only) the certificate is refused.
      await assert.rejects(pinnedRequest(`${server.url}/health`, undefined), /self-signed|unable to verify|certificate/i);
      const login = await pinnedRequest(`${server.url}/v1/auth/login`, ca, { method: 'POST', body: { username: 'admin', password } });
      assert.equal(login.status, 200);
      secrets.add(login.body.token);
      const created = await pinnedRequest(`${server.url}/v1/users`, ca, { method: 'POST', token: login.body.token, body: { name: 'kept', password: 'kept-across-restarts' } });
      assert.equal(created.status, 201);
      secrets.add('kept-across-restarts');
    } finally {
      assert.equal(await server.stop(), 0, 'SIGTERM → exit 0');
      allLogs.push(server.logs());
    }
  });

  test('a second start reuses everything; users and TLS material survive', async () => {
    const before = {
      ca: fs.readFileSync(path.join(dataDir, 'tls', 'ca.cert.pem'), 'utf8'),
      cert: fs.readFileSync(path.join(dataDir, 'tls', 'server.cert.pem'), 'utf8'),
      key: fs.readFileSync(path.join(dataDir, 'master.key')),
    };
    const server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0']);
    try {
      assert.equal(fs.readFileSync(path.join(dataDir, 'tls', 'ca.cert.pem'), 'utf8'), before.ca);
      assert.equal(fs.readFileSync(path.join(dataDir, 'tls', 'server.cert.pem'), 'utf8'), before.cert);
      assert.deepEqual(fs.readFileSync(path.join(dataDir, 'master.key')), before.key);
      assert.doesNotMatch(server.logs(), /created|issued|applied migrations/);
      const metrics = await pinnedRequest(`${server.url}/metrics`, before.ca);
      assert.match(metrics.body, /^enclave_accept_queue_connections 0$/m, 'the listening socket\'s accept queue, read at the scrape');
      const login = await pinnedRequest(`${server.url}/v1/auth/login`, before.ca, { method: 'POST', body: { username: 'kept', password: 'kept-across-restarts' } });
      assert.equal(login.status, 200);
      secrets.add(login.body.token);
    } finally {
      await server.stop();
      allLogs.push(server.logs());
    }
  });

  test('a new --tls-san name re-issues the server certificate under the same CA', async () => {
    const ca = readCa(dataDir);
    const server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--tls-san', 'enclaves.lan,10.1.2.3']);
    try {
      assert.equal(readCa(dataDir), ca);
      const text = execFileSync('openssl', ['x509', '-in', path.join(dataDir, 'tls', 'server.cert.pem'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
      assert.match(text, /DNS:enclaves\.lan/);
      assert.match(text, /IP Address:10\.1\.2\.3/);
      assert.match(text, /DNS:localhost/);
      const res = await pinnedRequest(`${server.url}/health`, ca, { servername: 'enclaves.lan' });
      assert.equal(res.status, 200);
    } finally {
      await server.stop();
      allLogs.push(server.logs());
    }
  });

  test('ENCLAVE_ADMIN_PASSWORD_FILE sets the first admin; a short one is refused at start', async () => {
    const dir2 = path.join(root, 'data2');
    const pwFile = path.join(root, 'pw');
    fs.writeFileSync(pwFile, 'from-a-secret-file\n');
    secrets.add('from-a-secret-file');
    const server = await startServer(['--data-dir', dir2, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD_FILE: pwFile });
    try {
      assert.ok(!fs.existsSync(path.join(dir2, 'initial-admin-password')));
      const login = await pinnedRequest(`${server.url}/v1/auth/login`, readCa(dir2), { method: 'POST', body: { username: 'admin', password: 'from-a-secret-file' } });
      assert.equal(login.status, 200);
      secrets.add(login.body.token);
    } finally {
      await server.stop();
      allLogs.push(server.logs());
    }
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), '--data-dir', path.join(root, 'data3'), '--listen', '127.0.0.1:0'], {
      cwd: REPO,
      env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: 'short' },
      encoding: 'utf8',
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /ENCLAVE_ADMIN_PASSWORD must be at least 12 characters/);
    assert.doesNotMatch(r.stderr + r.stdout, /short"/);
  });

  test('bad flags fail fast naming the setting', () => {
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), ...args], { cwd: REPO, encoding: 'utf8' });
    const listen = run(['--listen', 'nonsense']);
    assert.equal(listen.status, 2);
    assert.match(listen.stderr, /--listen: expected HOST:PORT/);
    const tls = run(['--tls-cert', '/nope.pem']);
    assert.equal(tls.status, 2);
    assert.match(tls.stderr, /--tls-cert and --tls-key go together/);
    for (const [name, value] of [['ENCLAVE_OVERLOAD_LAG_MS', '-5'], ['ENCLAVE_OVERLOAD_QUEUE_MS', 'soon']] as const) {
      const bad = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts')], {
        cwd: REPO,
        encoding: 'utf8',
        env: { ...process.env, [name]: value },
      });
      assert.equal(bad.status, 2, name);
      assert.match(bad.stderr, new RegExp(`${name} must be a positive integer`));
    }
    const help = run(['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /usage: enclave-server/);
    assert.match(help.stdout, /ENCLAVE_OVERLOAD_LAG_MS/);
    assert.match(help.stdout, /ENCLAVE_OVERLOAD_QUEUE_MS/);
  });

  test('migrate applies migrations only; backup makes a consistent copy', () => {
    const dir = path.join(root, 'mig');
    const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), ...args], { cwd: REPO, encoding: 'utf8' });
    assert.equal(run(['migrate', '--data-dir', dir]).status, 0);
    assert.ok(fs.existsSync(path.join(dir, 'enclaves.db')));
    assert.ok(!fs.existsSync(path.join(dir, 'tls')), 'migrate starts nothing else');
    const out = path.join(root, 'backup.db');
    const b = run(['backup', out, '--data-dir', dataDir]);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(mode(out), 0o600);
    const count = execFileSync('node', ['-e', `const D=require('better-sqlite3');const d=new D(${JSON.stringify(out)},{readonly:true});console.log(d.prepare("select count(*) c from users").get().c)`], { cwd: REPO, encoding: 'utf8' });
    assert.equal(count.trim(), '2');
    assert.equal(run(['backup', out, '--data-dir', dataDir]).status, 2, 'never overwrites');
    allLogs.push(b.stdout, b.stderr);
  });
});

describe('secrets from the operator\'s files', () => {
  test('two servers reading the same ENCLAVE_TOKEN_SECRET_FILE accept each other\'s tokens; a different secret refuses them', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-shared-secret-'));
    const secretFile = path.join(root, 'token.secret');
    fs.writeFileSync(secretFile, `${execFileSync('openssl', ['rand', '-hex', '32'], { encoding: 'utf8' }).trim()}\n`, { mode: 0o600 });
    const env = { ENCLAVE_ADMIN_PASSWORD: 'same-admin-password-on-both' };
    const start = (name: string, extra: NodeJS.ProcessEnv) =>
      startServer(['--data-dir', path.join(root, name), '--listen', '127.0.0.1:0'], { ...env, ...extra });
    // A token names its user's creation time, so B and C start from copies of A's first data folder: the same
    // users, as replicas on one database would see.
    const first = await start('a', { ENCLAVE_TOKEN_SECRET_FILE: secretFile });
    assert.equal(await first.stop(), 0);
    for (const copy of ['b', 'c']) fs.cpSync(path.join(root, 'a'), path.join(root, copy), { recursive: true });
    const a = await start('a', { ENCLAVE_TOKEN_SECRET_FILE: secretFile });
    const b = await start('b', { ENCLAVE_TOKEN_SECRET_FILE: secretFile });
    const c = await start('c', {});
    try {
      assert.equal(fs.existsSync(path.join(root, 'a', 'jwt.secret')), false, 'no data-folder secret when a file is configured');
      const login = await pinnedRequest(`${a.url}/v1/auth/login`, readCa(path.join(root, 'a')), { method: 'POST', body: { username: 'admin', password: env.ENCLAVE_ADMIN_PASSWORD } });
      assert.equal(login.status, 200);
      const onB = await pinnedRequest(`${b.url}/v1/users/admin`, readCa(path.join(root, 'b')), { token: login.body.token });
      assert.equal(onB.status, 200, 'a token from A is valid on B');
      const onC = await pinnedRequest(`${c.url}/v1/users/admin`, readCa(path.join(root, 'c')), { token: login.body.token });
      assert.equal(onC.status, 401, 'C signs with its own secret');
    } finally {
      await Promise.all([a.stop(), b.stop(), c.stop()]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('a token secret file that is not 32 bytes stops the start-up', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bad-secret-'));
    try {
      const secretFile = path.join(root, 'token.secret');
      fs.writeFileSync(secretFile, 'short', { mode: 0o600 });
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), '--data-dir', path.join(root, 'd'), '--listen', '127.0.0.1:0'], {
        cwd: REPO,
        env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: 'long-enough-password', ENCLAVE_TOKEN_SECRET_FILE: secretFile },
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /token signing secret .* must hold 32 bytes/);
      assert.doesNotMatch(r.stderr, /short/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('damaged secrets', () => {
  test('an empty jwt.secret stops the start-up instead of making tokens forgeable', async () => {
    const { spawnSync } = await import('node:child_process');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-damaged-'));
    try {
      fs.writeFileSync(path.join(dir, 'jwt.secret'), '', { mode: 0o600 });
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), '--data-dir', dir, '--listen', '127.0.0.1:0'], {
        cwd: REPO,
        env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: 'long-enough-password' },
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /jwt\.secret is damaged \(0 bytes/);
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary secret left behind');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
