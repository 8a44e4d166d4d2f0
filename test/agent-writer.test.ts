/**
 * The agent's runtime-folder writer on a real tmpfs (/dev/shm): modes, contents, refusal of disk folders,
 * unsafe parents, a disk folder mounted over the runtime folder (mount --bind) and planted symlinks, atomic
 * rotation seen by a separate reader process, retention of replaced generations, short writes on a full
 * tmpfs, the single-agent lock, removal and a race-free purge. Plus the name rules and bundle validation
 * that guard every path. Needs root for mount(8) and chown (the tests that mount skip without it).
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isEnclavePath, isKeystoreName } from '../client/common/names.js';
import { describeFileChanges, diffEnclaves, InvalidBundle, parseBundle, type HeldEnclave } from '../client/agent/bundle.js';
import { Backoff } from '../client/agent/backoff.js';
import { prepareRuntimeDir } from '../client/agent/runtime-dir.js';
import { RETAIN_MS, RuntimeWriter, STATUS_FILE } from '../client/agent/writer.js';
import { taggedEnclaveFiles } from './helpers/agent-files.js';
import { exists, listTree, REPO, shmDir, waitUntil } from './helpers/agent-proc.js';

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
    assert.match(linkTarget, new RegExp(`^\\.fleet\\.g${process.pid}-[0-9a-f]{8}-\\d+$`), 'pid and random in the name');
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
    const started = Date.now();
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const done = new Promise<void>((res) => child.once('exit', () => res()));
    let rotations = 0;
    let finished = false;
    void done.then(() => (finished = true));
    while (!finished) {
      rotations++;
      w.apply([enclave('ks', '/robot/driver', `gen${rotations}`, size)]);
      await new Promise((r) => setTimeout(r, 5));
    }
    await done;
    const r = JSON.parse(out) as Record<string, number>;
    assert.equal(r.mixed, 0, `mixed reads: ${out}`);
    assert.equal(r.partial, 0, `partial files: ${out}`);
    // A reader inside a replaced generation can finish: that generation is kept for a while (RETAIN_MS).
    assert.equal(r.missing, 0, `files vanished under a reader: ${out}`);
    assert.ok(r.matched! > 100, `the reader read consistently: ${out}`);
    assert.ok(r.generations! > 10, `the reader saw many generations: ${out} (${rotations} rotations)`);
    const kept = fs.readdirSync(dir).filter((n) => n.startsWith('.ks.')).length;
    if (Date.now() - started < RETAIN_MS - 500) assert.ok(kept > 1, 'replaced generations are kept for RETAIN_MS');
    w.purge();
    assert.deepEqual(listTree(dir), [], 'purge removes kept generations too');
  });

  test('a replaced generation is removed after the retention time; a removed enclave goes at once, also from kept ones', async () => {
    const dir = runtime();
    const w = new RuntimeWriter(dir, undefined, { retainMs: 300 });
    w.apply([enclave('ks', '/a', 'g1'), enclave('ks', '/b', 'g1')]);
    const first = fs.readlinkSync(join(dir, 'ks'));
    w.apply([enclave('ks', '/a', 'g2'), enclave('ks', '/b', 'g2')]);
    const second = fs.readlinkSync(join(dir, 'ks'));
    assert.ok(exists(join(dir, first, 'enclaves/b/key.pem')), 'the previous generation is kept');
    // /b revoked: its key leaves the current generation and every kept one at once.
    w.apply([enclave('ks', '/a', 'g3')]);
    const generations = fs.readdirSync(dir).filter((n) => n.startsWith('.ks.'));
    assert.equal(generations.length, 3);
    for (const g of generations) assert.ok(!exists(join(dir, g, 'enclaves/b')), `${g} holds no file of the removed enclave`);
    assert.ok(exists(join(dir, first, 'enclaves/a/key.pem')) && exists(join(dir, second, 'enclaves/a/key.pem')));
    await waitUntil('kept generations removed', () => fs.readdirSync(dir).filter((n) => n.startsWith('.ks.')).length === 1, 3000);
    assert.equal(fs.readFileSync(join(dir, 'ks/enclaves/a/key.pem'), 'utf8'), taggedEnclaveFiles('g3')['key.pem']);
    w.close();
  });

  test('a link is the agent\'s only if it points at the very folder (inode) the agent created', () => {
    const dir = runtime();
    const w = new RuntimeWriter(dir);
    w.apply([enclave('ks', '/a', 'g1')]);
    const target = fs.readlinkSync(join(dir, 'ks'));
    // Same name, another folder: someone moved the generation away and put their own in its place.
    fs.renameSync(join(dir, target), join(dir, 'moved-away'));
    fs.mkdirSync(join(dir, target), { mode: 0o700 });
    fs.writeFileSync(join(dir, target, 'theirs'), 'x');
    assert.throws(() => w.apply([enclave('ks', '/a', 'g2')]), /no longer the folder the agent created/);
    assert.deepEqual(fs.readdirSync(join(dir, target)), ['theirs'], 'their folder untouched');
    assert.equal(fs.readlinkSync(join(dir, 'ks')), target, 'link not replaced');
    // Two writers (two processes) never pick the same generation name.
    const other = runtime();
    const a = new RuntimeWriter(other);
    a.apply([enclave('x', '/a')]);
    a.purge();
    const b = new RuntimeWriter(other);
    b.apply([enclave('x', '/a')]);
    assert.notEqual(fs.readlinkSync(join(other, 'x')).replace(/-\d+$/, ''), target.replace(/-\d+$/, ''));
  });

  test('a full tmpfs: a short write is completed or fails (ENOSPC); nothing partial is published, the previous generation stays', (t) => {
    const mnt = join(runtime(), 'small');
    fs.mkdirSync(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', mnt], { stdio: 'pipe' });
    } catch (err) {
      t.skip(`cannot mount a tmpfs here: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    const w = new RuntimeWriter(join(mnt, 'rt'));
    try {
      const dir = join(mnt, 'rt');
      fs.mkdirSync(dir, { mode: 0o700 });
      w.apply([enclave('ks', '/a', 'small', 100)]); // 6 files of one page each
      const before = fs.readlinkSync(join(dir, 'ks'));
      // The last file written (permissions_ca.cert.pem) is larger than what is left: write(2) writes part of it.
      const big = enclave('ks', '/a', 'big', 100);
      big.files['permissions_ca.cert.pem'] = 'y'.repeat(200 * 1024);
      assert.throws(() => w.apply([big]), (err: NodeJS.ErrnoException) => err.code === 'ENOSPC');
      assert.equal(fs.readlinkSync(join(dir, 'ks')), before, 'the previous generation is still the one linked');
      for (const [name, content] of Object.entries(taggedEnclaveFiles('small', { size: 100 }))) {
        assert.equal(fs.readFileSync(join(dir, 'ks/enclaves/a', name), 'utf8'), content, name);
      }
      assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.ks.')), [before], 'the failed generation was removed');
      w.purge();
    } finally {
      w.close(); // the writer holds the runtime folder open
      execFileSync('umount', [mnt]);
    }
  });

  test('a disk folder mounted over the runtime folder is refused; purge still empties the folder the writer checked', (t) => {
    const dir = runtime();
    const disk = fs.mkdtempSync('/var/tmp/agent-writer-mnt-');
    cleanup.push(disk);
    const w = new RuntimeWriter(dir);
    w.apply([enclave('ks', '/a', 'g1')]);
    try {
      execFileSync('mount', ['--bind', disk, dir], { stdio: 'pipe' });
    } catch (err) {
      t.skip(`cannot bind-mount here: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    try {
      assert.throws(() => w.apply([enclave('ks', '/a', 'g2')]), /runtime folder .* was replaced after the agent checked it .*on ext2\/3\/4.*refusing to write/);
      assert.throws(() => w.writeStatusFile('{}'), /was replaced/);
      assert.deepEqual(listTree(disk), [], 'nothing written to the disk folder');
      w.purge(); // the tmpfs folder under the mount, through the descriptor the writer holds
    } finally {
      execFileSync('umount', [dir]);
    }
    assert.deepEqual(listTree(dir), [], 'the hidden tmpfs folder was purged');
    assert.deepEqual(listTree(disk), []);
  });

  test('refuses a runtime folder whose parents another user could change', () => {
    const base = runtime();
    const open = join(base, 'open');
    fs.mkdirSync(open, { mode: 0o777 });
    fs.chmodSync(open, 0o777); // writable by all, no sticky bit
    fs.mkdirSync(join(open, 'rt'), { mode: 0o700 });
    assert.throws(() => prepareRuntimeDir(join(open, 'rt')), /the folder above it, .*\/open, is writable by others \(mode 777\) without the sticky bit/);
    assert.throws(() => new RuntimeWriter(join(open, 'rt')).apply([enclave('ks', '/a')]), /without the sticky bit/);
    assert.deepEqual(fs.readdirSync(join(open, 'rt')), []);
    const theirs = join(base, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o755 });
    fs.chownSync(theirs, 65534, 65534);
    assert.throws(() => prepareRuntimeDir(join(theirs, 'rt')), /the folder above it, .*\/theirs, belongs to uid 65534/);
    // Sticky and writable by all (like /dev/shm): fine for a 0700 folder of ours, not for a 0755 one.
    const sticky = join(base, 'sticky');
    fs.mkdirSync(sticky);
    fs.chmodSync(sticky, 0o1777);
    assert.equal(prepareRuntimeDir(join(sticky, 'rt')), 'tmpfs');
    fs.chmodSync(join(sticky, 'rt'), 0o755);
    assert.throws(() => prepareRuntimeDir(join(sticky, 'rt')), /inside the shared folder .*\/sticky and must be 0700/);
  });

  test('one agent per runtime folder: the lock refuses a second one and takes over a stale one', async () => {
    const dir = runtime();
    const a = new RuntimeWriter(dir);
    a.lock();
    const lock = fs.readFileSync(join(dir, '.lock'), 'utf8');
    assert.match(lock, new RegExp(`^${process.pid} \\d+ [0-9a-f]+\n$`));
    const b = new RuntimeWriter(dir);
    assert.throws(() => b.lock(), new RegExp(`runtime folder ${dir} is in use by another enclave-agent \\(pid ${process.pid}\\)`));
    assert.throws(() => b.purge(), /in use by enclave-agent pid/);
    a.apply([enclave('ks', '/a')]);
    // Someone replaced the lock: the holder refuses to write.
    fs.writeFileSync(join(dir, '.lock.x'), `${process.pid} 1 abcdef\n`);
    fs.renameSync(join(dir, '.lock.x'), join(dir, '.lock'));
    assert.throws(() => a.apply([enclave('ks', '/a', 'g2')]), /lock .* was taken by pid \d+ while this agent held it/);
    // Stale: the pid is gone, or it is a pid reused by another process (other start time).
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.once('exit', r));
    for (const stale of [`${dead.pid} 1234 abcdef\n`, `${process.pid} 1 abcdef\n`, 'garbage']) {
      fs.writeFileSync(join(dir, '.lock'), stale);
      const c = new RuntimeWriter(dir);
      c.lock();
      assert.match(fs.readFileSync(join(dir, '.lock'), 'utf8'), new RegExp(`^${process.pid} \\d+ `));
      assert.notEqual(fs.readFileSync(join(dir, '.lock'), 'utf8'), stale);
      c.close();
      assert.ok(!exists(join(dir, '.lock')), 'released');
    }
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.lock')), []);
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
    fs.writeFileSync(join(dir, `${STATUS_FILE}.tmp-4242`), '{"pid"'); // killed while writing its status
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

  test('purge refuses a folder of another user or writable by others, and deletes only the agent\'s own names', () => {
    const base = runtime();
    const open = join(base, 'open');
    fs.mkdirSync(open);
    fs.mkdirSync(join(open, '.ks.3'));
    fs.chmodSync(open, 0o777);
    assert.throws(() => new RuntimeWriter(open).purge(), /runtime folder .*\/open is writable by others \(mode 777\)/);
    const theirs = join(base, 'theirs');
    fs.mkdirSync(theirs, { mode: 0o700 });
    fs.mkdirSync(join(theirs, '.ks.3'));
    fs.chownSync(theirs, 65534, 65534);
    assert.throws(() => new RuntimeWriter(theirs).purge(), /belongs to uid 65534, not to this agent/);
    assert.ok(exists(join(open, '.ks.3')) && exists(join(theirs, '.ks.3')), 'nothing removed');

    const dir = runtime();
    const gen = join(dir, '.ks.5');
    fs.mkdirSync(join(gen, 'enclaves/a'), { recursive: true });
    fs.writeFileSync(join(gen, 'enclaves/a/key.pem'), 'k');
    fs.writeFileSync(join(gen, 'enclaves/a/notes.txt'), 'not the agent\'s');
    fs.writeFileSync(join(gen, 'other'), 'x');
    const r = new RuntimeWriter(dir).purge();
    assert.deepEqual(r.foreign, ['.ks.5/enclaves/a/notes.txt', '.ks.5/other']);
    assert.deepEqual(listTree(dir), ['.ks.5/', '.ks.5/enclaves/', '.ks.5/enclaves/a/', '.ks.5/enclaves/a/notes.txt', '.ks.5/other']);
  });

  test('purge never descends into a folder that was swapped for a symlink while it was being removed', () => {
    const dir = runtime();
    const victim = runtime();
    for (let i = 0; i < 5; i++) fs.writeFileSync(join(victim, `key${i}.pem`), 'keep');
    const gen = join(dir, '.ks.7');
    fs.mkdirSync(join(gen, 'enclaves/zz_swap'), { recursive: true });
    fs.writeFileSync(join(gen, 'enclaves/zz_swap/key.pem'), 'k');
    // Between the check (lstat: a folder) and the descent, the folder becomes a symlink to the victim, as a
    // renameat2(RENAME_EXCHANGE) loop by an attacker would make it at some point.
    const mutableFs = nodeFs as { lstatSync: typeof nodeFs.lstatSync };
    const realLstat = nodeFs.lstatSync;
    let swapped = false;
    mutableFs.lstatSync = ((p: fs.PathLike, o?: fs.StatSyncOptions) => {
      const st = realLstat(p, o);
      if (!swapped && String(p).endsWith('/zz_swap')) {
        swapped = true;
        const real = join(gen, 'enclaves/zz_swap');
        fs.renameSync(real, `${real}_moved`);
        fs.symlinkSync(victim, real);
      }
      return st;
    }) as typeof nodeFs.lstatSync;
    syncBuiltinESMExports(); // the agent's `import * as fs` sees the wrapper
    try {
      try {
        new RuntimeWriter(dir).purge();
      } catch (err) {
        assert.match((err as Error).message, /symlink|changed/);
      }
    } finally {
      mutableFs.lstatSync = realLstat;
      syncBuiltinESMExports();
    }
    assert.ok(swapped, 'the swap happened during the purge');
    assert.deepEqual(fs.readdirSync(victim).sort(), ['key0.pem', 'key1.pem', 'key2.pem', 'key3.pem', 'key4.pem'], 'nothing deleted through the link');
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
  test('what changed between two bundles is named from the files themselves', () => {
    const files = taggedEnclaveFiles('t');
    const held = (path: string, f: Record<string, string>): HeldEnclave => ({ keystore: 'ks', path, notAfter: '', notAfterMs: 0, files: f });
    const before = [held('/a', files), held('/b', files), held('/gone', files)];
    const crl = taggedEnclaveFiles('t', { crl: true })['crl.pem']!;
    const after = [
      held('/a', { ...files, 'crl.pem': crl }),
      held('/b', { ...files, 'cert.pem': 'new cert', 'key.pem': 'new key', 'permissions.p7s': 'resigned' }),
      held('/new', files),
    ];
    const d = diffEnclaves(before, after);
    assert.deepEqual(d.added, ['ks:/new']);
    assert.deepEqual(d.removed, ['ks:/gone']);
    assert.deepEqual(d.updated.map((u) => `${u.id} ${describeFileChanges(u.files)}`), [
      'ks:/a crl.pem added (crl.pem)',
      'ks:/b certificate rotated, permissions changed (cert.pem, key.pem, permissions.p7s)',
    ]);
    assert.deepEqual(diffEnclaves(after, after).updated, [], 'the same files: no update');
    const back = diffEnclaves([held('/a', { ...files, 'crl.pem': crl, 'governance.p7s': 'g1' })], [held('/a', { ...files, 'crl.pem': 'newer' })]);
    assert.equal(describeFileChanges(back.updated[0]!.files), 'crl.pem changed, governance changed (crl.pem, governance.p7s)');
    const keyOnly = diffEnclaves([held('/a', files)], [held('/a', { ...files, 'key.pem': 'k' })]);
    assert.equal(describeFileChanges(keyOnly.updated[0]!.files), 'key.pem changed (key.pem)');
    const dropped = diffEnclaves([held('/a', { ...files, 'crl.pem': crl })], [held('/a', files)]);
    assert.equal(describeFileChanges(dropped.updated[0]!.files), 'crl.pem removed (crl.pem)');
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
    ['revision with a newline', (b) => (b.revision = 'r1\n'), /invalid revision/],
    ['revision not ASCII', (b) => (b.revision = 'r\u20ac1'), /invalid revision/],
    ['revision with a quote', (b) => (b.revision = 'a"b'), /invalid revision/],
    ['empty revision', (b) => (b.revision = ''), /invalid revision/],
    ['revision too long', (b) => (b.revision = 'a'.repeat(129)), /invalid revision/],
    ['negative revision', (b) => (b.revision = -1), /invalid revision/],
    ['fractional revision', (b) => (b.revision = 1.5), /invalid revision/],
    ['unknown identity mode', (b) => (b.keystores[0].enclaves[0].identity = 'per-device'), /unknown identity mode "per-device"/],
    ['identitySerial on a shared enclave', (b) => (b.keystores[0].enclaves[0].identitySerial = 'ab'), /invalid identitySerial/],
    ['per-robot with the server\'s key.pem', (b) => Object.assign(b.keystores[0].enclaves[0], perRobot(), { files: { ...perRobot().files, 'key.pem': 'k' } }), /must not carry key.pem/],
    ['per-robot cert.pem without identitySerial', (b) => Object.assign(b.keystores[0].enclaves[0], { ...perRobot(), identitySerial: undefined }), /come together/],
    ['per-robot identitySerial without cert.pem', (b) => Object.assign(b.keystores[0].enclaves[0], perRobot(), { files: withoutRobotFiles() }), /come together/],
    ['identitySerial in upper case', (b) => Object.assign(b.keystores[0].enclaves[0], perRobot(), { identitySerial: 'AB12' }), /invalid identitySerial/],
    ['identitySerial with colons', (b) => Object.assign(b.keystores[0].enclaves[0], perRobot(), { identitySerial: 'ab:12' }), /invalid identitySerial/],
    ['identitySerial longer than 20 bytes', (b) => Object.assign(b.keystores[0].enclaves[0], perRobot(), { identitySerial: 'a'.repeat(41) }), /invalid identitySerial/],
    ['per-robot without permissions.p7s', (b) => Object.assign(b.keystores[0].enclaves[0], { identity: 'per-robot', files: withoutRobotFiles('permissions.p7s') }), /permissions.p7s is missing/],
  ];
  /** The files the server sends for a per-robot enclave before the robot holds a certificate. */
  function withoutRobotFiles(...also: string[]): Record<string, string> {
    const f: Record<string, string> = taggedEnclaveFiles('t', { crl: true });
    for (const name of ['key.pem', 'cert.pem', ...also]) delete f[name];
    return f;
  }
  function perRobot(): { identity: string; identitySerial: string; files: Record<string, string> } {
    const files: Record<string, string> = taggedEnclaveFiles('t', { crl: true });
    delete files['key.pem'];
    return { identity: 'per-robot', identitySerial: '0a1b2c', files };
  }
  test('per-robot enclaves: no key.pem from the server; cert.pem with its serial once issued, or neither', () => {
    const issued = good() as any;
    Object.assign(issued.keystores[0].enclaves[0], perRobot());
    const e = parseBundle(issued).enclaves[0]!;
    assert.equal(e.identity, 'per-robot');
    assert.equal(e.identitySerial, '0a1b2c');
    assert.equal(e.files['key.pem'], undefined);
    assert.ok(e.files['cert.pem']);
    const waiting = good() as any;
    Object.assign(waiting.keystores[0].enclaves[0], { identity: 'per-robot', files: withoutRobotFiles() });
    const w = parseBundle(waiting).enclaves[0]!;
    assert.deepEqual(Object.keys(w.files).sort(), ['crl.pem', 'governance.p7s', 'identity_ca.cert.pem', 'permissions.p7s', 'permissions_ca.cert.pem']);
    assert.equal(w.identitySerial, undefined);
    // Old servers send no identity field; an explicit "shared" is the same.
    const shared = good() as any;
    shared.keystores[0].enclaves[0].identity = 'shared';
    assert.equal(parseBundle(shared).enclaves[0]!.identity, undefined);
    assert.equal(parseBundle(good()).enclaves[0]!.identity, undefined);
  });
  test('revisions of letters and digits (or a whole number) are accepted', () => {
    for (const revision of ['7', 'abcDEF0123', 'a'.repeat(128), 42]) {
      assert.equal(parseBundle({ ...good(), revision }).revision, revision);
    }
  });
  for (const [name, mutate, re] of bad) {
    test(`bundle refused: ${name}`, () => {
      const b = good();
      mutate(b);
      assert.throws(() => parseBundle(b), (err: Error) => err instanceof InvalidBundle && re.test(err.message));
    });
  }
});

describe('agent backoff', () => {
  test('floors: a base below 0.1 s or a cap below the base cannot make a retry storm', () => {
    const zero = new Backoff(0, 0, () => 0.999999);
    assert.deepEqual([1, 2, 3].map(() => zero.next()), [99, 99, 99]);
  });

  test('full jitter: uniform below an exponentially growing ceiling, capped', () => {
    const top = new Backoff(1000, 8000, () => 0.999999);
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => top.next()), [999, 1999, 3999, 7999, 7999, 7999]);
    top.reset();
    assert.equal(top.next(), 999);
    const bottom = new Backoff(1000, 8000, () => 0);
    assert.deepEqual([1, 2, 3].map(() => bottom.next()), [0, 0, 0]);
  });
});
