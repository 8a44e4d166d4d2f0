/**
 * The agent's runtime-folder writer on a real tmpfs (/dev/shm): modes, contents, refusal of disk folders and
 * planted symlinks, atomic rotation seen by a separate reader process, removal and purge. Plus the name rules
 * and bundle validation that guard every path.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isEnclavePath, isKeystoreName } from '../client/common/names.js';
import { InvalidBundle, parseBundle, type HeldEnclave } from '../client/agent/bundle.js';
import { Backoff } from '../client/agent/backoff.js';
import { prepareRuntimeDir } from '../client/agent/runtime-dir.js';
import { RuntimeWriter, STATUS_FILE } from '../client/agent/writer.js';
import { taggedEnclaveFiles } from './helpers/agent-files.js';
import { exists, listTree, REPO, shmDir } from './helpers/agent-proc.js';

const cleanup: string[] = [];
after(() => {
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

function runtime(): string {
  const d = shmDir('agent-writer');
  cleanup.push(d);
  return d;
}

function enclave(keystore: string, path: string, tag = 'g1', size?: number): HeldEnclave {
  return { keystore, path, notAfter: '2099-01-01T00:00:00.000Z', notAfterMs: Date.parse('2099-01-01'), files: taggedEnclaveFiles(tag, { size }) };
}

function mode(path: string): number {
  return fs.lstatSync(path).mode & 0o7777;
}

describe('agent writer', () => {
  test('writes enclaves with 0700 folders and 0600 files behind a keystore symlink', () => {
    const dir = runtime();
    assert.equal(prepareRuntimeDir(dir), 'tmpfs');
    const w = new RuntimeWriter(dir);
    w.apply([enclave('fleet', '/amr_07/driver'), enclave('fleet', '/amr_07'), enclave('site.b', '/x')]);

    const linkTarget = fs.readlinkSync(join(dir, 'fleet'));
    assert.match(linkTarget, /^\.fleet\.\d+$/);
    const encl = join(dir, 'fleet/enclaves/amr_07/driver');
    for (const f of ['identity_ca.cert.pem', 'cert.pem', 'key.pem', 'permissions_ca.cert.pem', 'governance.p7s', 'permissions.p7s']) {
      assert.equal(fs.readFileSync(join(encl, f), 'utf8'), taggedEnclaveFiles('g1')[f]);
      assert.equal(mode(join(encl, f)), 0o600, f);
    }
    assert.ok(!exists(join(encl, 'crl.pem')));
    for (const d of [linkTarget, `${linkTarget}/enclaves`, `${linkTarget}/enclaves/amr_07`, `${linkTarget}/enclaves/amr_07/driver`]) {
      assert.equal(mode(join(dir, d)), 0o700, d);
    }
    assert.ok(exists(join(dir, 'fleet/enclaves/amr_07/key.pem')), 'enclave /amr_07 next to its child /amr_07/driver');
    assert.ok(exists(join(dir, 'site.b/enclaves/x/cert.pem')));
    assert.deepEqual(
      fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort(),
      ['fleet', 'site.b'],
    );
  });

  test('--group gives 0750 folders, 0640 files and the group, also on the runtime folder', () => {
    const dir = runtime();
    const gid = 1; // "daemon" on Debian; root may chgrp to any group
    prepareRuntimeDir(dir, gid);
    assert.equal(mode(dir), 0o750);
    assert.equal(fs.statSync(dir).gid, gid);
    new RuntimeWriter(dir, gid).apply([enclave('ks', '/a/b')]);
    const real = fs.realpathSync(join(dir, 'ks'));
    for (const d of [real, `${real}/enclaves`, `${real}/enclaves/a`, `${real}/enclaves/a/b`]) {
      assert.equal(mode(d), 0o750, d);
      assert.equal(fs.statSync(d).gid, gid, d);
    }
    const key = join(real, 'enclaves/a/b/key.pem');
    assert.equal(mode(key), 0o640);
    assert.equal(fs.statSync(key).gid, gid);
  });

  for (const [label, base] of [
    ['/var/tmp', '/var/tmp'],
    ['the repository', REPO],
  ] as const) {
    test(`refuses a runtime folder on disk (${label}) and writes nothing`, () => {
      const parent = fs.mkdtempSync(join(base, '.agent-writer-disk-'));
      cleanup.push(parent);
      const dir = join(parent, 'runtime');
      assert.throws(() => prepareRuntimeDir(dir), (err: Error) => {
        assert.match(err.message, /is on .*not tmpfs or ramfs: refusing to write enclave keys/);
        return true;
      });
      assert.deepEqual(fs.readdirSync(parent), [], 'not even the folder was created');
      fs.mkdirSync(dir, { mode: 0o700 });
      assert.throws(() => prepareRuntimeDir(dir), /not tmpfs or ramfs/);
      assert.deepEqual(fs.readdirSync(dir), []);
    });
  }

  test('refuses a runtime folder that is a symlink, or writable by others', () => {
    const base = runtime();
    const real = join(base, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    fs.symlinkSync(real, join(base, 'link'));
    assert.throws(() => prepareRuntimeDir(join(base, 'link')), /is a symlink: refusing to follow it/);
    assert.throws(() => new RuntimeWriter(join(base, 'link')).apply([enclave('ks', '/a')]), /is a symlink/);
    assert.deepEqual(fs.readdirSync(real), []);
    const open = join(base, 'open');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    assert.throws(() => prepareRuntimeDir(open), /writable by others/);
  });

  test('a planted symlink is an error, never a redirect', () => {
    const dir = runtime();
    const elsewhere = runtime();
    fs.symlinkSync(elsewhere, join(dir, 'fleet'));
    const w = new RuntimeWriter(dir);
    assert.throws(() => w.apply([enclave('fleet', '/a')]), /symlink the agent did not create/);
    assert.deepEqual(fs.readdirSync(elsewhere), [], 'nothing written through the link');
    assert.deepEqual(fs.readdirSync(dir), ['fleet'], 'no half-built tree left behind');
    // Even with the agent's own naming: a link it did not make in this process is not followed.
    fs.unlinkSync(join(dir, 'fleet'));
    fs.symlinkSync('.fleet.1', join(dir, 'fleet'));
    assert.throws(() => w.apply([enclave('fleet', '/a')]), /symlink the agent did not create/);
    // A real folder in the slot is refused too.
    fs.unlinkSync(join(dir, 'fleet'));
    fs.mkdirSync(join(dir, 'fleet'));
    assert.throws(() => w.apply([enclave('fleet', '/a')]), /was not created by the agent/);
  });

  test('a symlink swapped in after the agent wrote is detected on the next update', () => {
    const dir = runtime();
    const elsewhere = runtime();
    const w = new RuntimeWriter(dir);
    w.apply([enclave('ks', '/a', 'g1')]);
    fs.unlinkSync(join(dir, 'ks'));
    fs.symlinkSync(elsewhere, join(dir, 'ks'));
    assert.throws(() => w.apply([enclave('ks', '/a', 'g2')]), /did not create/);
    assert.throws(() => w.apply([]), /did not create/);
    assert.deepEqual(fs.readdirSync(elsewhere), []);
  });

  test('rotation is atomic: a reader process never sees a mix of old and new files', async () => {
    const dir = runtime();
    const w = new RuntimeWriter(dir);
    const size = 64 * 1024;
    w.apply([enclave('ks', '/robot/driver', 'gen0', size)]);
    const enclaveDir = join(dir, 'ks/enclaves/robot/driver');
    // The reader resolves the enclave folder once per round (as a process does when it chdirs or opens the
    // folder), reads cert.pem and key.pem from it and compares their generation markers; it also reads
    // cert.pem by full path to check that no file is ever seen half-written.
    const reader = `
      const fs = require('fs');
      const [dir, ms, size] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
      const gen = (s, name) => {
        const m = /^BEGIN (gen\\d+) (\\S+)\\n(x*)\\nEND (gen\\d+) (\\S+)\\n$/.exec(s);
        return m && m[1] === m[4] && m[2] === name && m[5] === name && m[3].length === size ? m[1] : null;
      };
      const r = { matched: 0, mixed: 0, missing: 0, partial: 0, byPath: 0, generations: new Set() };
      const until = Date.now() + ms;
      while (Date.now() < until) {
        try {
          process.chdir(dir);
          const c = gen(fs.readFileSync('cert.pem', 'utf8'), 'cert.pem');
          const k = gen(fs.readFileSync('key.pem', 'utf8'), 'key.pem');
          if (!c || !k) r.partial++; else if (c === k) { r.matched++; r.generations.add(c); } else r.mixed++;
        } catch { r.missing++; }
        process.chdir('/');
        try {
          if (gen(fs.readFileSync(dir + '/cert.pem', 'utf8'), 'cert.pem')) r.byPath++; else r.partial++;
        } catch { r.missing++; }
      }
      r.generations = r.generations.size;
      process.stdout.write(JSON.stringify(r));
    `;
    const child = spawn(process.execPath, ['-e', reader, enclaveDir, '1500', String(size)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const done = new Promise<void>((res) => child.once('exit', () => res()));
    let rotations = 0;
    let finished = false;
    void done.then(() => (finished = true));
    while (!finished) {
      rotations++;
      w.apply([enclave('ks', '/robot/driver', `gen${rotations}`, size)]);
      await new Promise((r) => setTimeout(r, 2));
    }
    await done;
    const r = JSON.parse(out) as Record<string, number>;
    assert.equal(r.mixed, 0, `mixed reads: ${out}`);
    assert.equal(r.partial, 0, `partial files: ${out}`);
    assert.ok(r.matched! > 100, `the reader read consistently: ${out}`);
    assert.ok(r.generations! > 10, `the reader saw many generations: ${out} (${rotations} rotations)`);
    // Only the current generation remains.
    assert.equal(fs.readdirSync(dir).filter((n) => n.startsWith('.ks.')).length, 1);
  });

  test('unchanged keystores are not rewritten; unbound enclaves and keystores are removed', () => {
    const dir = runtime();
    const w = new RuntimeWriter(dir);
    w.apply([enclave('a', '/one'), enclave('a', '/two'), enclave('b', '/three')]);
    const linkB = fs.readlinkSync(join(dir, 'b'));
    const r = w.apply([enclave('a', '/one'), enclave('b', '/three')]);
    assert.deepEqual(r, { written: ['a'], removed: [] });
    assert.equal(fs.readlinkSync(join(dir, 'b')), linkB, 'keystore b untouched');
    assert.ok(exists(join(dir, 'a/enclaves/one/key.pem')));
    assert.ok(!exists(join(dir, 'a/enclaves/two')));
    assert.deepEqual(w.apply([enclave('a', '/one')]), { written: [], removed: ['b'] });
    assert.ok(!exists(join(dir, 'b')));
    w.apply([]);
    assert.deepEqual(listTree(dir), []);
  });

  test('purge removes what this or an earlier (crashed) agent wrote, and leaves foreign entries alone', () => {
    const dir = runtime();
    const elsewhere = runtime();
    fs.writeFileSync(join(elsewhere, 'keep'), 'x');
    const crashed = new RuntimeWriter(dir);
    crashed.apply([enclave('a', '/one'), enclave('b', '/two')]);
    fs.writeFileSync(join(dir, STATUS_FILE), '{}');
    fs.mkdirSync(join(dir, '.a.99')); // a half-built generation
    fs.writeFileSync(join(dir, 'notes.txt'), 'mine');
    fs.symlinkSync(elsewhere, join(dir, 'planted'));
    const fresh = new RuntimeWriter(dir);
    const result = fresh.purge();
    assert.equal(result.keystores, 2);
    assert.deepEqual(result.foreign.sort(), ['notes.txt', 'planted']);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['notes.txt', 'planted']);
    assert.deepEqual(fs.readdirSync(elsewhere), ['keep'], 'nothing followed');
    assert.deepEqual(fresh.purge(), { keystores: 0, foreign: ['notes.txt', 'planted'] }, 'idempotent');
    assert.deepEqual(new RuntimeWriter(join(dir, 'missing')).purge(), { keystores: 0, foreign: [] });
  });
});

describe('agent name rules and bundle validation', () => {
  const paths: [string, boolean][] = [
    ['/foo', true],
    ['/foo/bar123/_/baz_', true],
    ['/fleet/amr_07/driver', true],
    ['', false],
    ['/', false],
    ['//', false],
    ['foo', false],
    ['/42foo', false],
    ['/foo/42bar', false],
    ['/foo/', false],
    ['/foo//bar', false],
    ['/foo/../bar', false],
    ['/..', false],
    ['/a-b', false],
    ['/a b', false],
    [`/${'a'.repeat(245)}`, false],
    [`/${'a'.repeat(244)}`, true],
  ];
  for (const [path, ok] of paths) {
    test(`enclave path ${JSON.stringify(path.slice(0, 30))} → ${ok ? 'valid' : 'invalid'}`, () => assert.equal(isEnclavePath(path), ok));
  }
  const keystores: [string, boolean][] = [
    ['fleet', true],
    ['site.tokyo', true],
    ['prod-1_a', true],
    ['', false],
    ['.', false],
    ['..', false],
    ['.hidden', false],
    ['a/b', false],
    ['a..b', false],
    ['-x', false],
    ['a'.repeat(65), false],
  ];
  for (const [name, ok] of keystores) {
    test(`keystore name ${JSON.stringify(name.slice(0, 20))} → ${ok ? 'valid' : 'invalid'}`, () => assert.equal(isKeystoreName(name), ok));
  }

  const good = (): Record<string, unknown> => ({
    revision: '7',
    robot: { name: 'r1' },
    keystores: [{ name: 'ks', enclaves: [{ path: '/a/b', notAfter: '2030-01-01T00:00:00Z', files: taggedEnclaveFiles('t', { crl: true }) }] }],
  });
  test('a valid bundle is accepted', () => {
    const b = parseBundle(good());
    assert.equal(b.revision, '7');
    assert.equal(b.enclaves.length, 1);
    assert.equal(b.enclaves[0]!.notAfter, '2030-01-01T00:00:00.000Z');
    assert.ok(b.enclaves[0]!.files['crl.pem']);
  });
  const bad: [string, (b: any) => void, RegExp][] = [
    ['path with ..', (b) => (b.keystores[0].enclaves[0].path = '/a/../../etc'), /invalid enclave path/],
    ['relative path', (b) => (b.keystores[0].enclaves[0].path = 'a/b'), /invalid enclave path/],
    ['keystore ..', (b) => (b.keystores[0].name = '..'), /invalid keystore name/],
    ['keystore with slash', (b) => (b.keystores[0].name = 'a/b'), /invalid keystore name/],
    ['unknown file', (b) => (b.keystores[0].enclaves[0].files['permissions.xml'] = 'x'), /unexpected file "permissions.xml"/],
    ['file name with path', (b) => (b.keystores[0].enclaves[0].files['../key.pem'] = 'x'), /unexpected file/],
    ['missing key', (b) => delete b.keystores[0].enclaves[0].files['key.pem'], /key.pem is missing/],
    ['non-string content', (b) => (b.keystores[0].enclaves[0].files['cert.pem'] = 5), /cert.pem is empty/],
    ['bad notAfter', (b) => (b.keystores[0].enclaves[0].notAfter = 'soon'), /invalid notAfter/],
    ['duplicate enclave', (b) => b.keystores[0].enclaves.push(b.keystores[0].enclaves[0]), /listed twice/],
    ['duplicate keystore', (b) => b.keystores.push(b.keystores[0]), /listed twice/],
    ['no revision', (b) => delete b.revision, /no revision/],
  ];
  for (const [name, mutate, re] of bad) {
    test(`bundle refused: ${name}`, () => {
      const b = good();
      mutate(b);
      assert.throws(() => parseBundle(b), (err: Error) => err instanceof InvalidBundle && re.test(err.message));
    });
  }
});

describe('agent backoff', () => {
  test('full jitter: uniform below an exponentially growing ceiling, capped', () => {
    const top = new Backoff(1000, 8000, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => top.next()), [999, 1999, 3999, 7999, 7999, 7999]);
    top.reset();
    assert.equal(top.next(), 999);
    const bottom = new Backoff(1000, 8000, () => 0);
    assert.deepEqual([1, 2, 3].map(() => bottom.next()), [0, 0, 0]);
  });
});
