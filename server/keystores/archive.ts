/**
 * Safe `.tar.gz` reading and deterministic writing, in memory (nothing ever touches the disk).
 *
 * Reading is defensive, because archives come from users: every name is normalised and checked, only
 * regular files, folders and symlinks that stay inside the archive are accepted, and the size limits are
 * enforced while the data is being inflated, so a tar bomb is refused after at most `maxUnpackedBytes`
 * bytes instead of being buffered.
 */
import zlib from 'node:zlib';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { InvalidInput, PayloadTooLarge } from '../errors.js';

export type ArchiveEntry =
  | { type: 'file'; content: Buffer }
  | { type: 'directory' }
  | { type: 'symlink'; target: string };

export interface ArchiveLimits {
  /** Bytes of the inflated tar stream (headers and padding included). */
  maxUnpackedBytes: number;
  /** Entries of any kind (files, folders, symlinks). */
  maxEntries: number;
  /** Size of a single file. */
  maxFileBytes: number;
}

/** Symlinks followed while resolving one path before we call it a loop (Linux uses 40 as well). */
export const MAX_SYMLINK_HOPS = 40;

/**
 * Longest entry name or symlink target, and most `/`-separated segments in one. Keystore paths are far
 * shorter (an enclave name is at most 245 characters); the bounds keep the path checks cheap.
 */
const MAX_NAME_LENGTH = 1024;
const MAX_SEGMENTS = 64;
/** Path segments one resolution may walk through (hops included) before it is called a loop. */
const MAX_RESOLVE_STEPS = 1024;

function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}

/**
 * Normalises an entry name: drops a leading `./`, a trailing `/`, empty and `.` segments. Returns the
 * normalised name (`''` for the archive root itself) or throws InvalidInput naming the entry.
 */
function normalizeName(raw: string): string {
  if (raw.length > MAX_NAME_LENGTH) throw new InvalidInput(`archive entry ${quote(raw)}: name is too long`);
  if (raw.includes('\0')) throw new InvalidInput(`archive entry ${quote(raw)}: name contains a NUL character`);
  if (raw.includes('\\')) throw new InvalidInput(`archive entry ${quote(raw)}: name contains a backslash`);
  if (raw.startsWith('/')) throw new InvalidInput(`archive entry ${quote(raw)}: absolute paths are not allowed`);
  const segments = raw.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) throw new InvalidInput(`archive entry ${quote(raw)}: '..' in a path is not allowed`);
  if (segments.length > MAX_SEGMENTS) throw new InvalidInput(`archive entry ${quote(raw)}: nested too deeply`);
  return segments.join('/');
}

function checkLinkTarget(name: string, target: string): void {
  if (target.length === 0) throw new InvalidInput(`archive entry ${quote(name)}: symlink has an empty target`);
  if (target.length > MAX_NAME_LENGTH) throw new InvalidInput(`archive entry ${quote(name)}: symlink target is too long`);
  if (target.includes('\0')) throw new InvalidInput(`archive entry ${quote(name)}: symlink target contains a NUL character`);
  if (target.includes('\\')) throw new InvalidInput(`archive entry ${quote(name)}: symlink target contains a backslash`);
  if (target.startsWith('/'))
    throw new InvalidInput(`archive entry ${quote(name)}: symlink to an absolute path (${quote(target)}) is not allowed`);
  if (target.split('/').length > MAX_SEGMENTS) throw new InvalidInput(`archive entry ${quote(name)}: symlink target is nested too deeply`);
}

type Resolution = { ok: true; path: string } | { ok: false; problem: 'outside' | 'loop' | 'absolute' };

/**
 * Resolves `path` (relative to the archive root) the way the kernel would after extraction: every
 * component that is a symlink in the archive is replaced by its target, relative to the link's folder,
 * and `..` pops what has really been resolved so far. Never leaves the root: going above it is reported.
 */
function resolvePath(entries: ReadonlyMap<string, ArchiveEntry>, path: string): Resolution {
  // `pending` is a stack (next segment last); `done` holds the resolved prefixes, `done[i]` = first i+1 segments.
  const pending = path.split('/').reverse();
  const done: string[] = [];
  let hops = 0;
  let steps = 0;
  while (pending.length > 0) {
    if (++steps > MAX_RESOLVE_STEPS) return { ok: false, problem: 'loop' };
    const segment = pending.pop()!;
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      if (done.length === 0) return { ok: false, problem: 'outside' };
      done.pop();
      continue;
    }
    const candidate = done.length === 0 ? segment : `${done[done.length - 1]!}/${segment}`;
    const entry = entries.get(candidate);
    if (entry?.type === 'symlink') {
      if (++hops > MAX_SYMLINK_HOPS) return { ok: false, problem: 'loop' };
      if (entry.target.startsWith('/')) return { ok: false, problem: 'absolute' };
      const target = entry.target.split('/');
      for (let i = target.length - 1; i >= 0; i--) pending.push(target[i]!);
      continue;
    }
    done.push(candidate);
  }
  return { ok: true, path: done.length === 0 ? '' : done[done.length - 1]! };
}

/** Follows symlinks (chains allowed, relative to each link's folder) to the final entry's path, or undefined. */
export function resolveEntryPath(entries: ReadonlyMap<string, ArchiveEntry>, path: string): string | undefined {
  const r = resolvePath(entries, path);
  return r.ok ? r.path : undefined;
}

/**
 * The content of the file at `path`, following symlinks inside the archive (relative to the link's
 * folder, chains allowed). Undefined when the path does not exist, is not a file, leaves the archive or
 * loops.
 */
export function resolveEntry(entries: ReadonlyMap<string, ArchiveEntry>, path: string): Buffer | undefined {
  const r = resolvePath(entries, path);
  if (!r.ok) return undefined;
  const entry = entries.get(r.path);
  return entry?.type === 'file' ? entry.content : undefined;
}

function entryType(header: Pick<Header, 'name' | 'type'>): 'file' | 'directory' | 'symlink' {
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'directory';
    case 'symlink':
      return 'symlink';
    case 'link':
      throw new InvalidInput(`archive entry ${quote(header.name)}: hard links are not allowed`);
    case 'character-device':
    case 'block-device':
      throw new InvalidInput(`archive entry ${quote(header.name)}: device files are not allowed`);
    case 'fifo':
      throw new InvalidInput(`archive entry ${quote(header.name)}: FIFOs are not allowed`);
    default:
      throw new InvalidInput(`archive entry ${quote(header.name)}: unsupported entry type ${String(header.type)}`);
  }
}

/** Whole-archive checks once every entry is known: no path through a file or symlink, links stay inside. */
function checkStructure(entries: ReadonlyMap<string, ArchiveEntry>): void {
  // Nothing may sit below a file or a symlink. Names sharing a prefix are contiguous once sorted, so one
  // binary search per non-folder entry finds any entry below it.
  const sorted = [...entries.keys()].sort();
  for (const [name, entry] of entries) {
    if (entry.type === 'directory') continue;
    const prefix = `${name}/`;
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < prefix) lo = mid + 1;
      else hi = mid;
    }
    const below = sorted[lo];
    if (below !== undefined && below.startsWith(prefix))
      throw new InvalidInput(`archive entry ${quote(below)}: a parent (${quote(name)}) is a ${entry.type}`);
  }
  for (const [name, entry] of entries) {
    if (entry.type !== 'symlink') continue;
    const r = resolvePath(entries, name);
    if (!r.ok) {
      const why =
        r.problem === 'loop'
          ? 'symlinks loop (or nest too deeply)'
          : r.problem === 'absolute'
            ? 'resolves through a symlink to an absolute path'
            : 'resolves outside the archive';
      throw new InvalidInput(`archive entry ${quote(name)}: symlink to ${quote(entry.target)} ${why}`);
    }
  }
}

/**
 * Reads a `.tar.gz` into a map from normalised names (no leading `./`, no trailing `/`) to entries.
 * Throws InvalidInput (422) naming the entry for anything unsafe or malformed, PayloadTooLarge (413) as
 * soon as a limit is passed.
 */
export function readTarGz(data: Buffer, limits: ArchiveLimits): Promise<Map<string, ArchiveEntry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, ArchiveEntry>();
    const gunzip = zlib.createGunzip();
    const extract = tar.extract();
    let unpacked = 0;
    let count = 0;
    let settled = false;

    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      gunzip.destroy();
      extract.destroy();
      reject(err);
    };

    extract.on('entry', (header, stream, next) => {
      if (settled) return;
      try {
        if (++count > limits.maxEntries)
          throw new PayloadTooLarge(`archive has more than ${limits.maxEntries} entries`);
        const type = entryType(header);
        const name = normalizeName(header.name);
        const size = header.size ?? 0;
        if (type === 'file' && size > limits.maxFileBytes)
          throw new PayloadTooLarge(`archive entry ${quote(name)} is larger than ${limits.maxFileBytes} bytes`);
        if (name === '') {
          // `./` itself, as `tar -C dir .` writes it: the root folder, nothing to record.
          if (type !== 'directory') throw new InvalidInput(`archive entry ${quote(header.name)}: empty name`);
          stream.resume();
          stream.on('end', () => next());
          return;
        }
        if (entries.has(name)) throw new InvalidInput(`archive entry ${quote(name)} appears more than once`);
        if (type === 'symlink') {
          const target = header.linkname ?? '';
          checkLinkTarget(name, target);
          entries.set(name, { type: 'symlink', target });
        } else if (type === 'directory') {
          entries.set(name, { type: 'directory' });
        }
        const chunks: Buffer[] = [];
        let got = 0;
        stream.on('data', (data: unknown) => {
          if (settled || type !== 'file') return;
          const chunk = data as Buffer;
          got += chunk.length;
          if (got > limits.maxFileBytes) {
            fail(new PayloadTooLarge(`archive entry ${quote(name)} is larger than ${limits.maxFileBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        stream.on('end', () => {
          if (settled) return;
          if (type === 'file') entries.set(name, { type: 'file', content: Buffer.concat(chunks, got) });
          next();
        });
      } catch (err) {
        stream.destroy();
        fail(err);
      }
    });
    extract.on('error', (err: unknown) =>
      fail(new InvalidInput('not a .tar.gz archive', { reason: err instanceof Error ? err.message : String(err) })),
    );
    extract.on('finish', () => {
      if (settled) return;
      try {
        checkStructure(entries);
      } catch (err) {
        fail(err);
        return;
      }
      settled = true;
      resolve(entries);
    });

    gunzip.on('data', (chunk: Buffer) => {
      if (settled) return;
      unpacked += chunk.length;
      if (unpacked > limits.maxUnpackedBytes) {
        fail(new PayloadTooLarge(`archive unpacks to more than ${limits.maxUnpackedBytes} bytes`));
        return;
      }
      if (!extract.write(chunk)) gunzip.pause();
    });
    extract.on('drain', () => {
      if (!settled) gunzip.resume();
    });
    gunzip.on('end', () => {
      if (!settled) extract.end(undefined);
    });
    gunzip.on('error', (err: Error) => fail(new InvalidInput('not a .tar.gz archive', { reason: err.message })));
    gunzip.end(data);
  });
}

export interface TarInputEntry {
  path: string;
  type: 'file' | 'directory' | 'symlink';
  content?: string | Buffer;
  target?: string;
  mode?: number;
}

export interface WriteTarOptions {
  /** Modification time of every entry; defaults to now. */
  mtime?: Date;
}

function compareSegments(a: string, b: string): number {
  const sa = a.split('/');
  const sb = b.split('/');
  for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
    const x = sa[i]!;
    const y = sb[i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return sa.length - sb.length;
}

/**
 * Writes a `.tar.gz`: entries sorted by path (parents before children, missing parent folders added
 * with mode 0755), owner root/root (0/0), one mtime for all. Same input and mtime give the same bytes.
 * Throws a plain Error for names that readTarGz would refuse (a programming error, not user input).
 */
export async function writeTarGz(entries: TarInputEntry[], options: WriteTarOptions = {}): Promise<Buffer> {
  const mtime = options.mtime ?? new Date();
  const byPath = new Map<string, TarInputEntry>();
  for (const e of entries) {
    const path = e.path.replace(/\/+$/, '');
    if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0') || path.split('/').some((s) => s === '' || s === '.' || s === '..'))
      throw new Error(`writeTarGz: bad entry path ${quote(e.path)}`);
    if (byPath.has(path)) throw new Error(`writeTarGz: duplicate entry ${quote(path)}`);
    if (e.type === 'symlink' && (!e.target || e.target.startsWith('/')))
      throw new Error(`writeTarGz: symlink ${quote(path)} needs a relative target`);
    byPath.set(path, { ...e, path });
  }
  for (const path of [...byPath.keys()]) {
    const segments = path.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      const existing = byPath.get(parent);
      if (!existing) byPath.set(parent, { path: parent, type: 'directory' });
      else if (existing.type !== 'directory') throw new Error(`writeTarGz: ${quote(parent)} is used as a folder`);
    }
  }
  const sorted = [...byPath.values()].sort((a, b) => compareSegments(a.path, b.path));

  const pack = tar.pack();
  const gzip = zlib.createGzip({ level: 9 });
  const out: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    gzip.on('data', (c: Buffer) => out.push(c));
    gzip.on('end', () => resolve(Buffer.concat(out)));
    gzip.on('error', reject);
    pack.on('error', reject);
  });
  pack.pipe(gzip);
  const common = { mtime, uid: 0, gid: 0, uname: 'root', gname: 'root' };
  for (const e of sorted) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.type === 'directory') {
        pack.entry({ ...common, name: `${e.path}/`, type: 'directory', mode: e.mode ?? 0o755 }, cb);
      } else if (e.type === 'symlink') {
        pack.entry({ ...common, name: e.path, type: 'symlink', linkname: e.target!, mode: e.mode ?? 0o777 }, cb);
      } else {
        const content = typeof e.content === 'string' ? Buffer.from(e.content, 'utf8') : (e.content ?? Buffer.alloc(0));
        pack.entry({ ...common, name: e.path, type: 'file', mode: e.mode ?? 0o644, size: content.length }, content, cb);
      }
    });
  }
  pack.finalize();
  return done;
}
