import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { InvalidInput, PayloadTooLarge } from '../server/errors.js';
import { readTarGz, resolveEntry, writeTarGz, type ArchiveEntry } from '../server/keystores/archive.js';
import { FIXTURES } from './helpers/tools.js';

const FIXTURE = `${FIXTURES}/talker-listener-keystore.tar.gz`;
const LIMITS = { maxUnpackedBytes: 8 * 1024 * 1024, maxEntries: 1000, maxFileBytes: 1024 * 1024 };

type RawEntry = Partial<Header> & { name: string; content?: string | Buffer };

/** A .tar.gz built with tar-stream directly: the real tar refuses to write some of these. */
async function rawTarGz(entries: RawEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const gzip = zlib.createGzip();
  const done = new Promise<Buffer>((resolve, reject) => {
    gzip.on('data', (c: Buffer) => chunks.push(c));
    gzip.on('end', () => resolve(Buffer.concat(chunks)));
    gzip.on('error', reject);
  });
  pack.pipe(gzip);
  for (const { content, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (content !== undefined) pack.entry(header, content, cb);
      else pack.entry(header, cb);
    });
  }
  pack.finalize();
  return done;
}

async function rejects(data: Buffer, cls: typeof InvalidInput | typeof PayloadTooLarge, message: RegExp, limits = LIMITS): Promise<void> {
  await assert.rejects(readTarGz(data, limits), (err: unknown) => {
    assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
    assert.match((err as Error).message, message);
    return true;
  });
}

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'archive-test-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('readTarGz', () => {
  it('reads the sros2 fixture: files, folders and relative symlinks', async () => {
    const entries = await readTarGz(readFileSync(FIXTURE), LIMITS);
    assert.equal(entries.get('keystore')?.type, 'directory');
    assert.equal(entries.get('keystore/public/ca.cert.pem')?.type, 'file');
    assert.deepEqual(entries.get('keystore/public/identity_ca.cert.pem'), { type: 'symlink', target: 'ca.cert.pem' });
    assert.deepEqual(entries.get('keystore/enclaves/talker_listener/talker/identity_ca.cert.pem'), {
      type: 'symlink',
      target: '../../../public/identity_ca.cert.pem',
    });
    // A two-hop chain: enclave link -> public/identity_ca.cert.pem -> ca.cert.pem.
    const ca = entries.get('keystore/public/ca.cert.pem') as { content: Buffer };
    assert.deepEqual(resolveEntry(entries, 'keystore/enclaves/talker_listener/talker/identity_ca.cert.pem'), ca.content);
    assert.ok(resolveEntry(entries, 'keystore/enclaves/talker_listener/listener/governance.p7s')?.toString().startsWith('MIME-Version'));
    assert.equal(resolveEntry(entries, 'keystore/enclaves'), undefined, 'a folder is not a file');
    assert.equal(resolveEntry(entries, 'keystore/nope'), undefined);
    assert.equal(entries.size, 29);
  });

  it('normalises ./ prefixes and trailing slashes and skips the ./ root entry', async () => {
    const data = await rawTarGz([
      { name: './', type: 'directory' },
      { name: './a/', type: 'directory' },
      { name: './a/f.txt', content: 'hi' },
      { name: 'a/l', type: 'symlink', linkname: './f.txt' },
    ]);
    const entries = await readTarGz(data, LIMITS);
    assert.deepEqual([...entries.keys()].sort(), ['a', 'a/f.txt', 'a/l']);
    assert.equal(resolveEntry(entries, 'a/l')?.toString(), 'hi');
  });

  it('also reads what the real tar writes (tar -C dir .)', async () => {
    const dir = join(tmp, 'realtar');
    execFileSync('mkdir', ['-p', join(dir, 'x/y')]);
    writeFileSync(join(dir, 'x/y/file'), 'content');
    execFileSync('ln', ['-s', 'y/file', join(dir, 'x/link')]);
    const out = join(tmp, 'realtar.tar.gz');
    execFileSync('tar', ['-czf', out, '-C', dir, '.']);
    const entries = await readTarGz(readFileSync(out), LIMITS);
    assert.equal(resolveEntry(entries, 'x/link')?.toString(), 'content');
  });

  it('resolveEntry follows chains and gives up on loops', () => {
    const entries = new Map<string, ArchiveEntry>([
      ['d', { type: 'directory' }],
      ['d/f', { type: 'file', content: Buffer.from('F') }],
      ['l1', { type: 'symlink', target: 'l2' }],
      ['l2', { type: 'symlink', target: 'd/l3' }],
      ['d/l3', { type: 'symlink', target: 'f' }],
      ['loopA', { type: 'symlink', target: 'loopB' }],
      ['loopB', { type: 'symlink', target: 'loopA' }],
      ['self', { type: 'symlink', target: './self' }],
      ['dirlink', { type: 'symlink', target: 'd' }],
      ['out', { type: 'symlink', target: '../x' }],
    ]);
    assert.equal(resolveEntry(entries, 'l1')?.toString(), 'F');
    assert.equal(resolveEntry(entries, 'dirlink/f')?.toString(), 'F');
    assert.equal(resolveEntry(entries, 'loopA'), undefined);
    assert.equal(resolveEntry(entries, 'self'), undefined);
    assert.equal(resolveEntry(entries, 'out'), undefined);
  });

  describe('refuses unsafe archives with a message naming the entry', () => {
    const cases: Array<[string, RawEntry[], RegExp]> = [
      ['a path escaping with ..', [{ name: '../evil', content: 'x' }], /"\.\.\/evil".*'\.\.'/],
      ['.. in the middle', [{ name: 'a/../../evil', content: 'x' }], /"a\/\.\.\/\.\.\/evil".*'\.\.'/],
      ['an absolute path', [{ name: '/etc/cron.d/evil', content: 'x' }], /"\/etc\/cron\.d\/evil".*absolute/],
      ['a symlink to /etc/passwd', [{ name: 'keystore/passwd', type: 'symlink', linkname: '/etc/passwd' }], /"keystore\/passwd".*absolute/],
      [
        'a relative symlink climbing out',
        [{ name: 'keystore/enclaves/a/key.pem', type: 'symlink', linkname: '../../../../etc/passwd' }],
        /"keystore\/enclaves\/a\/key\.pem".*outside the archive/,
      ],
      [
        'a symlink climbing out through another symlink (lexically inside)',
        [
          { name: 's', type: 'symlink', linkname: '.' },
          { name: 't', type: 'symlink', linkname: 's/..' },
        ],
        /"t".*outside the archive/,
      ],
      ['a symlink loop', [{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'a' }], /loop/],
      ['a hard link', [{ name: 'f', content: 'x' }, { name: 'g', type: 'link', linkname: 'f' }], /"g".*hard links/],
      ['a character device', [{ name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 }], /"dev\/null".*device/],
      ['a block device', [{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }], /"sda".*device/],
      ['a fifo', [{ name: 'pipe', type: 'fifo' }], /"pipe".*FIFO/],
      ['a duplicate name', [{ name: 'a/f', content: '1' }, { name: './a/f', content: '2' }], /"a\/f".*more than once/],
      ['a backslash in a name', [{ name: 'a\\..\\evil', content: 'x' }], /backslash/],
      ['a NUL in a (pax) name', [{ name: `${'a'.repeat(120)}\0evil`, content: 'x' }], /NUL character/],
      ['a name nested too deeply', [{ name: `${'d/'.repeat(70)}f`, content: 'x' }], /nested too deeply/],
      ['a symlink chain longer than 40 hops', Array.from({ length: 50 }, (_, i) => ({ name: `l${i}`, type: 'symlink' as const, linkname: `l${i + 1}` })), /"l0".*loop/],
      ['a file under a symlinked folder', [{ name: 'd', type: 'symlink', linkname: 'x' }, { name: 'd/f', content: 'x' }], /"d\/f": a parent \("d"\) is a symlink/],
      ['a file under a file', [{ name: 'f', content: 'x' }, { name: 'f/g', content: 'y' }], /"f\/g": a parent \("f"\) is a file/],
    ];
    for (const [what, entries, message] of cases) {
      it(what, async () => rejects(await rawTarGz(entries), InvalidInput, message));
    }
  });

  it('refuses data that is not a .tar.gz', async () => {
    await rejects(Buffer.from('hello, not gzip'), InvalidInput, /^not a \.tar\.gz archive$/);
    await rejects(zlib.gzipSync(Buffer.alloc(2048, 'x')), InvalidInput, /^not a \.tar\.gz archive$/);
    const good = await rawTarGz([{ name: 'f', content: 'x'.repeat(5000) }]);
    await rejects(good.subarray(0, good.length - 30), InvalidInput, /^not a \.tar\.gz archive$/);
  });

  it('stops a zero bomb (10 MB of zeros, a few KB compressed) with 413', async () => {
    const bomb = await rawTarGz([{ name: 'zeros', content: Buffer.alloc(10 * 1024 * 1024) }]);
    assert.ok(bomb.length < 64 * 1024, `bomb is ${bomb.length} bytes`);
    await rejects(bomb, PayloadTooLarge, /larger than 1048576 bytes/);
    await rejects(bomb, PayloadTooLarge, /unpacks to more than 1048576 bytes/, {
      maxUnpackedBytes: 1024 * 1024,
      maxEntries: 10,
      maxFileBytes: 100 * 1024 * 1024,
    });
  });

  it('stops a 1 GiB bomb while streaming, without buffering it', async () => {
    // A tar header claiming a 1 GiB file followed by 1 GiB of zeros, gzipped on the fly (~1 MB).
    const header = Buffer.alloc(512);
    header.write('big', 0);
    header.write('0000644\0', 100);
    header.write('0000000\0', 108);
    header.write('0000000\0', 116);
    header.write('10000000000\0', 124); // 1 GiB, octal
    header.write('00000000000\0', 136);
    header.write('0', 156);
    header.write('ustar\0' + '00', 257);
    header.fill(' ', 148, 156);
    let sum = 0;
    for (const b of header) sum += b;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    const gzip = zlib.createGzip({ level: 1 });
    const parts: Buffer[] = [];
    gzip.on('data', (c: Buffer) => parts.push(c));
    const ended = new Promise((r) => gzip.on('end', r));
    gzip.write(header);
    const mb = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 1024; i++) gzip.write(mb);
    gzip.end();
    await ended;
    const bomb = Buffer.concat(parts);
    assert.ok(bomb.length < 8 * 1024 * 1024, `bomb is ${bomb.length} bytes`);
    const rssBefore = process.memoryUsage().rss;
    await rejects(bomb, PayloadTooLarge, /unpacks to more than/, { maxUnpackedBytes: 4 * 1024 * 1024, maxEntries: 10, maxFileBytes: 2 * 1024 * 1024 * 1024 });
    const grown = process.memoryUsage().rss - rssBefore;
    assert.ok(grown < 200 * 1024 * 1024, `rss grew by ${Math.round(grown / 1e6)} MB`);
  });

  it('refuses 100k tiny entries with 413 after maxEntries', async () => {
    const entries: RawEntry[] = [];
    for (let i = 0; i < 100_000; i++) entries.push({ name: `f${i}`, content: '' });
    const data = await rawTarGz(entries);
    await rejects(data, PayloadTooLarge, /more than 1000 entries/);
  });
});

describe('writeTarGz', () => {
  const input = [
    { path: 'top/b/file.txt', type: 'file' as const, content: 'hello\n' },
    { path: 'top/a', type: 'directory' as const },
    { path: 'top/b/link', type: 'symlink' as const, target: 'file.txt' },
    { path: 'top/key.pem', type: 'file' as const, content: Buffer.from('secret'), mode: 0o600 },
  ];
  const mtime = new Date('2026-01-02T03:04:05Z');

  it('is deterministic, sorted, owned by root and readable by the real tar', async () => {
    const one = await writeTarGz(input, { mtime });
    const two = await writeTarGz([...input].reverse(), { mtime });
    assert.deepEqual(one, two);
    const file = join(tmp, 'w.tar.gz');
    writeFileSync(file, one);
    const listing = execFileSync('tar', ['-tzvf', file, '--numeric-owner', '--full-time'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => l.split(/\s+/));
    assert.deepEqual(
      listing.map((f) => f[5]),
      ['top/', 'top/a/', 'top/b/', 'top/b/file.txt', 'top/b/link', 'top/key.pem'],
    );
    for (const f of listing) assert.equal(f[1], '0/0');
    assert.deepEqual(
      listing.map((f) => f[0]),
      ['drwxr-xr-x', 'drwxr-xr-x', 'drwxr-xr-x', '-rw-r--r--', 'lrwxrwxrwx', '-rw-------'],
    );
    assert.equal(listing[3]![3], '2026-01-02');
    assert.deepEqual(listing[4]!.slice(5), ['top/b/link', '->', 'file.txt']);
  });

  it('round-trips through readTarGz', async () => {
    const entries = await readTarGz(await writeTarGz(input, { mtime }), LIMITS);
    assert.equal(resolveEntry(entries, 'top/b/link')?.toString(), 'hello\n');
    assert.equal(resolveEntry(entries, 'top/key.pem')?.toString(), 'secret');
    assert.equal(entries.get('top/a')?.type, 'directory');
  });

  it('refuses names readTarGz would refuse', async () => {
    await assert.rejects(writeTarGz([{ path: '../x', type: 'file', content: '' }]), /bad entry path/);
    await assert.rejects(writeTarGz([{ path: '/x', type: 'file', content: '' }]), /bad entry path/);
    await assert.rejects(writeTarGz([{ path: 'l', type: 'symlink', target: '/etc/passwd' }]), /relative target/);
  });
});
