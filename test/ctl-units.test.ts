import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isGzip, packFolder } from '../client/ctl/archive.js';
import { sinceArg } from '../client/ctl/commands/audit.js';
import { collectPairs, integer } from '../client/ctl/commands/shared.js';
import { configDir, loadConfig, saveConfig } from '../client/ctl/config.js';
import { EXIT_AUTH, EXIT_REFUSED, fromResponse, unreachable } from '../client/ctl/errors.js';
import { keyValues, table, time } from '../client/ctl/output.js';
import { includeClosure, policyFields, readPolicy } from '../client/ctl/policy.js';
import { Progress } from '../client/ctl/progress.js';
import { mode, tempDir } from './helpers/ctl.js';
import { FIXTURES } from './helpers/tools.js';

describe('enclavectl internals', () => {
  test('tables align columns and neutralise control characters from the server', () => {
    const text = table(
      [
        { a: 'x', b: 'long value' },
        { a: 'longer\u001b[2J', b: 'y' },
      ],
      [
        { header: 'A', value: (r) => r.a },
        { header: 'B', value: (r) => r.b },
      ],
    );
    assert.equal(text, 'A           B\nx           long value\nlonger?[2J  y');
    assert.equal(keyValues([['name', 'x'], ['skipped', undefined], ['domain id', '0']]), 'name:      x\ndomain id: 0');
    assert.equal(time('2026-11-27T01:33:38.120Z'), '2026-11-27 01:33:38Z');
    assert.equal(time(null), '-');
  });

  test('argument parsers: integers, k=v pairs, --since ages', () => {
    assert.equal(integer(1, 10)('7'), 7);
    assert.throws(() => integer(1, 10)('11'), /from 1 to 10/);
    assert.throws(() => integer(1, 10)('1.5'), /whole number/);
    assert.deepEqual(collectPairs('b=2', collectPairs('a=1', undefined)), { a: '1', b: '2' });
    assert.deepEqual(collectPairs('a=1,b=', undefined), { a: '1', b: '' });
    assert.throws(() => collectPairs('a=2', { a: '1' }), /given twice/);
    assert.throws(() => collectPairs('=x', undefined), /key=value/);
    const now = Date.parse('2026-01-31T12:00:00Z');
    assert.equal(sinceArg('15m', now), '2026-01-31T11:45:00.000Z');
    assert.equal(sinceArg('7d', now), '2026-01-24T12:00:00.000Z');
    assert.equal(sinceArg('2026-01-01T08:00:00+01:00'), '2026-01-01T07:00:00.000Z');
    assert.throws(() => sinceArg('last tuesday'), /ISO 8601/);
  });

  test('server errors map to exit codes; 401 wording follows the saved expiry', () => {
    const body = (code: string, message: string, details?: unknown) => ({ error: { code, message, details } });
    const past = new Date(Date.now() - 1000).toISOString();
    const future = new Date(Date.now() + 60_000).toISOString();
    const expired = fromResponse(401, body('invalid-token', 'invalid or expired token'), 'https://s', undefined, past);
    assert.equal(expired.exitCode, EXIT_AUTH);
    assert.equal(expired.message, 'session expired: run enclavectl login');
    assert.match(fromResponse(401, body('invalid-token', 'x'), 'https://s', undefined, future).message, /no longer valid/);
    const creds = fromResponse(401, body('invalid-credentials', 'invalid username or password'), 'https://s');
    assert.equal(creds.message, 'invalid username or password');
    const many = fromResponse(429, body('too-many-requests', 'too many failed logins'), 'https://s', '120');
    assert.equal(many.message, 'too many failed logins (retry in 120 s)');
    assert.equal(many.exitCode, EXIT_REFUSED);
    const invalid = fromResponse(422, body('invalid-keystore', 'the keystore is invalid', ['public/ca.cert.pem: not PEM', 'no enclaves/']), 'https://s');
    assert.deepEqual(invalid.details, ['public/ca.cert.pem: not PEM', 'no enclaves/']);
    const zod = fromResponse(422, body('invalid-input', 'since: bad', [{ field: 'since', problem: 'bad' }]), 'https://s');
    assert.deepEqual(zod.details, [], 'a detail repeating the message is not printed twice');
    assert.equal(fromResponse(500, 'not json', 'https://s').message, 'HTTP 500 from https://s');
    assert.match(unreachable('https://s:1', 'CERT_HAS_EXPIRED', '').message, /^TLS verification of https:\/\/s:1 failed: the server certificate has expired/);
    assert.equal(unreachable('https://s:1', 'ECONNREFUSED', '').message, 'cannot reach https://s:1: connection refused (is the server running?)');
  });

  test('config: XDG_CONFIG_HOME (absolute only), folder tightened to 0700, file 0600, atomic replace', () => {
    const root = tempDir('enclavectl-config-');
    try {
      assert.equal(configDir({ XDG_CONFIG_HOME: root }), path.join(root, 'enclavectl'));
      assert.notEqual(configDir({ XDG_CONFIG_HOME: 'relative' }), path.join('relative', 'enclavectl'));
      const dir = path.join(root, 'enclavectl');
      fs.mkdirSync(dir, { mode: 0o755 });
      fs.chmodSync(dir, 0o755);
      const file = saveConfig({ server: 'https://s:1', user: 'admin', token: 't', ca: 'PEM' }, dir);
      assert.equal(mode(dir), 0o700);
      assert.equal(mode(file), 0o600);
      saveConfig({ server: 'https://s:2', user: 'admin' }, dir);
      assert.deepEqual(loadConfig(dir), { server: 'https://s:2', user: 'admin' });
      assert.deepEqual(fs.readdirSync(dir), ['config.json']);
      fs.writeFileSync(file, '{broken');
      assert.throws(() => loadConfig(dir), /not valid JSON: run enclavectl login/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('policy: the include closure of an sros2 policy, packed rooted at its folder', async () => {
    const policies = path.join(FIXTURES, 'policies');
    assert.deepEqual(includeClosure(policies, 'talker_listener.policy.xml'), [
      'common/node.xml',
      'common/node/logging.xml',
      'common/node/time.xml',
      'common/node/parameters.xml',
    ]);
    const sample = await readPolicy(path.join(policies, 'sample.policy.xml'));
    assert.equal(sample.kind, 'archive');
    if (sample.kind !== 'archive') return;
    assert.equal(sample.file, 'sample.policy.xml');
    assert.ok(sample.files.includes('add_two_ints.policy.xml') && sample.files.includes('common/node/time.xml'));
    assert.ok(!sample.files.includes('deny_mix_example.policy.xml'), 'only what is included');
    assert.deepEqual(Object.keys(policyFields(sample)), ['policyArchive', 'policyFile']);
    const listed = execFileSync('tar', ['-tzf', '-'], { input: sample.archive, encoding: 'utf8' }).trim().split('\n');
    assert.ok(listed.includes('sample.policy.xml') && listed.includes('common/node/logging.xml'), listed.join(' '));
    const plain = await readPolicy(path.join(policies, 'deny_mix_example.policy.xml'));
    assert.equal(plain.kind, 'xml');
    // The server refuses text that merely declares the XInclude namespace, so such a file goes packed too.
    const declared = await readPolicy(path.join(policies, 'default.policy.xml'));
    assert.equal(declared.kind, 'archive');
    assert.deepEqual(declared.kind === 'archive' && declared.files, ['default.policy.xml']);
    assert.deepEqual(Object.keys(policyFields(plain)), ['policy']);

    const root = tempDir('enclavectl-policy-');
    try {
      const write = (name: string, href: string) =>
        fs.writeFileSync(path.join(root, name), `<policy xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="${href}"/></policy>`);
      write('up.policy.xml', '../outside.xml');
      assert.throws(() => includeClosure(root, 'up.policy.xml'), /include "\.\.\/outside\.xml" leaves the policy's folder/);
      write('abs.policy.xml', '/etc/passwd');
      assert.throws(() => includeClosure(root, 'abs.policy.xml'), /must be a relative path/);
      write('gone.policy.xml', 'missing.xml');
      await assert.rejects(readPolicy(path.join(root, 'gone.policy.xml')), /included file missing\.xml not found/);
      fs.writeFileSync(path.join(root, 'fake.tar.gz'), 'not gzip');
      await assert.rejects(readPolicy(path.join(root, 'fake.tar.gz')), /not gzip data/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('packFolder keeps symlinks as symlinks and file modes; the system tar reads it', async () => {
    const root = tempDir('enclavectl-pack-');
    try {
      const src = path.join(root, 'ks');
      fs.mkdirSync(path.join(src, 'public'), { recursive: true });
      fs.mkdirSync(path.join(src, 'enclaves', 'a'), { recursive: true });
      fs.writeFileSync(path.join(src, 'public', 'ca.cert.pem'), 'CERT');
      fs.symlinkSync('ca.cert.pem', path.join(src, 'public', 'identity_ca.cert.pem'));
      fs.symlinkSync('../../public/identity_ca.cert.pem', path.join(src, 'enclaves', 'a', 'identity_ca.cert.pem'));
      fs.writeFileSync(path.join(src, 'enclaves', 'a', 'key.pem'), 'KEY', { mode: 0o600 });
      const archive = await packFolder(src);
      assert.ok(isGzip(archive));
      const out = path.join(root, 'out');
      fs.mkdirSync(out);
      execFileSync('tar', ['-xzf', '-', '-C', out], { input: archive });
      assert.equal(fs.readlinkSync(path.join(out, 'public', 'identity_ca.cert.pem')), 'ca.cert.pem');
      assert.equal(fs.readlinkSync(path.join(out, 'enclaves', 'a', 'identity_ca.cert.pem')), '../../public/identity_ca.cert.pem');
      assert.equal(fs.readFileSync(path.join(out, 'enclaves', 'a', 'identity_ca.cert.pem'), 'utf8'), 'CERT');
      assert.equal(mode(path.join(out, 'enclaves', 'a', 'key.pem')), 0o600);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('progress off a terminal: a line per 10 %, nothing when disabled', () => {
    const lines: string[] = [];
    const stream = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const p = new Progress({ label: 'up', total: 100, kind: 'count', enabled: true, stream });
    for (let i = 0; i <= 100; i += 5) p.update(i);
    p.finish();
    assert.equal(lines.length, 11);
    assert.equal(lines[10], 'up [##############################] 100% 100/100\n');
    const quiet: string[] = [];
    const off = new Progress({ label: 'x', total: 10, kind: 'bytes', enabled: false, stream: { isTTY: true, write: (s: string) => quiet.push(s) } as unknown as NodeJS.WriteStream });
    off.update(5);
    off.finish();
    assert.deepEqual(quiet, []);
  });
});
