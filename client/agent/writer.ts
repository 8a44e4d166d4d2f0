/**
 * Writes enclaves into the runtime folder so that a reader never sees a partial or mixed enclave.
 *
 * Layout (the scheme is described in README.md, "Runtime folder"):
 *
 *   <runtime>/<keystore>                 symlink -> .<keystore>.g<pid>-<rand>-<n>   (ROS_SECURITY_KEYSTORE)
 *   <runtime>/.<keystore>.g<pid>-<rand>-<n>/   one complete generation of that keystore
 *       enclaves/<a>/<b>/<file>          the runtime files of enclave /a/b
 *   <runtime>/.status.json               what `run` holds, for `enclave-agent status`
 *   <runtime>/.lock                      the agent that uses this folder (lock.ts)
 *
 * An update builds a complete new generation next to the old one (new folders, files created with
 * O_EXCL|O_NOFOLLOW), points a new symlink at it and renames that symlink over `<keystore>`: rename(2) is
 * atomic, so a path lookup resolves either entirely to the old generation or entirely to the new one. The
 * replaced generation is kept for RETAIN_MS (a process that entered it can finish reading), then deleted;
 * an enclave that was removed (revoked, unbound, expired) is deleted from kept generations at once. Files
 * are never modified in place.
 *
 * Before every write, swap and removal the runtime folder is checked again (RuntimeDirGuard: same folder,
 * still on tmpfs/ramfs, owner, mode, parents) together with the lock, and all work goes through the folder
 * the guard opened. The writer only ever replaces a `<keystore>` symlink it created itself in this process:
 * the link must name the generation it made, and that folder must be the very inode it created. Anything
 * else found there is an error, never followed. `purge()` also recognises what an earlier agent process
 * left behind (same naming) and removes it without following links; other entries are left alone.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { isKeystoreName, isRuntimeFileName, REQUIRED_RUNTIME_FILES, OPTIONAL_RUNTIME_FILES, type RuntimeFileName } from '../common/names.js';
import { enclaveDigest, type HeldEnclave } from './bundle.js';
import { AgentError } from './errors.js';
import { closeDir, createDir, createFile, lstatOrNull, openDir, removeTree, replaceFile, type OpenDir, type RemoveFilter } from './fsutil.js';
import { LOCK_FILE, LOCK_TEMP, RuntimeLock } from './lock.js';
import { RuntimeDirGuard } from './runtime-dir.js';

export const STATUS_FILE = '.status.json';
/** How long a replaced generation is kept for processes that are still reading it. */
export const RETAIN_MS = 5000;

const GENERATION = /^\.(.+)\.g(\d+)-([0-9a-f]{8})-(\d+)$/;
/** Generations of agents before 0.1 (`.<keystore>.<n>`): still recognised by purge. */
const LEGACY_GENERATION = /^\.(.+)\.(\d+)$/;
const TEMP_LINK_SUFFIX = '.link';
const ENCLAVE_PART = /^[A-Za-z_][A-Za-z0-9_]*$/;
const RUNTIME_FILES: readonly RuntimeFileName[] = [...REQUIRED_RUNTIME_FILES, ...OPTIONAL_RUNTIME_FILES];

/** The keystore a generation folder name belongs to, if it follows the agent's naming. */
function generationKeystore(name: string): string | undefined {
  const m = GENERATION.exec(name) ?? LEGACY_GENERATION.exec(name);
  return m && isKeystoreName(m[1]) ? m[1] : undefined;
}

/** Inside a generation only `enclaves/`, enclave path parts and the seven runtime file names are the agent's. */
const inGeneration: RemoveFilter = (rel, isDir) => {
  const parts = rel.split('/');
  if (parts.length === 1) return isDir && parts[0] === 'enclaves';
  const last = parts[parts.length - 1]!;
  return isDir ? ENCLAVE_PART.test(last) : isRuntimeFileName(last);
};

export interface ApplyResult {
  /** Keystores whose tree was (re)written. */
  written: string[];
  /** Keystores removed because nothing of them is held any more. */
  removed: string[];
}

interface Generation {
  name: string;
  dev: number;
  ino: number;
  /** Enclave paths it holds. */
  paths: string[];
}

export interface WriterOptions {
  /** How long a replaced generation is kept (default RETAIN_MS). */
  retainMs?: number;
  /** Called when the delayed removal of a replaced generation fails. */
  onError?: (err: unknown) => void;
}

export class RuntimeWriter {
  /** keystore -> the generation our symlink points at, and the digest of what it holds. */
  private readonly links = new Map<string, Generation & { digest: string }>();
  /** keystore -> replaced generations still kept, with the time they may go. */
  private readonly retired = new Map<string, (Generation & { until: number })[]>();
  private readonly guard: RuntimeDirGuard;
  private readonly lockFile: RuntimeLock;
  /** Makes generation names unique to this writer: pid and random. */
  private readonly tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  private counter = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly dirMode: number;
  private readonly fileMode: number;
  private readonly retainMs: number;

  constructor(
    readonly dir: string,
    private readonly gid?: number,
    private readonly opts: WriterOptions = {},
  ) {
    this.dirMode = gid === undefined ? 0o700 : 0o750;
    this.fileMode = gid === undefined ? 0o600 : 0o640;
    this.retainMs = opts.retainMs ?? RETAIN_MS;
    this.guard = new RuntimeDirGuard(dir);
    this.lockFile = new RuntimeLock(dir);
  }

  /** Keystores currently linked. */
  keystores(): string[] {
    return [...this.links.keys()];
  }

  /** Checks the runtime folder (and the lock, when held) again; returns the path to work through. */
  verify(): string {
    const base = this.guard.verify();
    this.lockFile.check(base);
    return base;
  }

  /** Takes the runtime folder's lock: a second agent on the same folder is refused (AgentError). */
  lock(): void {
    this.lockFile.acquire(this.verify());
  }

  /** Releases the lock and the open runtime folder. Idempotent. */
  close(): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    if (this.guard.verified) this.lockFile.release(this.guard.base);
    this.guard.close();
  }

  /** Writes the status file (no secrets) through the same checks as the enclaves. */
  writeStatusFile(text: string): void {
    const base = this.verify();
    replaceFile(`${base}/${STATUS_FILE}`, text, this.fileMode, { gid: this.gid });
  }

  /** Makes the runtime folder hold exactly `enclaves`: changed keystores are swapped in, others removed. */
  apply(enclaves: HeldEnclave[]): ApplyResult {
    this.verify();
    const byKeystore = new Map<string, HeldEnclave[]>();
    for (const e of enclaves) {
      const list = byKeystore.get(e.keystore) ?? [];
      list.push(e);
      byKeystore.set(e.keystore, list);
    }
    const result: ApplyResult = { written: [], removed: [] };
    for (const [keystore, list] of byKeystore) {
      const digest = list
        .map((e) => `${e.path}=${enclaveDigest(e)}`)
        .sort()
        .join(';');
      if (this.links.get(keystore)?.digest === digest && this.ownsLink(keystore)) continue;
      this.writeKeystore(keystore, list, digest);
      result.written.push(keystore);
    }
    for (const keystore of [...this.links.keys()]) {
      if (byKeystore.has(keystore)) continue;
      this.removeKeystore(keystore);
      result.removed.push(keystore);
    }
    this.sweep();
    return result;
  }

  /**
   * True when `<runtime>/<keystore>` is the symlink this writer made, pointing at the folder (inode) it
   * created; false when the slot is empty; throws when something else is there.
   */
  private ownsLink(keystore: string): boolean {
    const base = this.guard.base;
    const label = `${this.dir}/${keystore}`;
    const st = lstatOrNull(`${base}/${keystore}`);
    if (!st) return false;
    if (!st.isSymbolicLink()) throw new AgentError(`${label} exists and was not created by the agent: refusing to replace it`);
    const target = fs.readlinkSync(`${base}/${keystore}`);
    const mine = this.links.get(keystore);
    if (mine?.name !== target) {
      throw new AgentError(`${label} is a symlink the agent did not create (to ${target}): refusing to follow or replace it`);
    }
    const gst = lstatOrNull(`${base}/${target}`);
    if (!gst?.isDirectory() || gst.dev !== mine.dev || gst.ino !== mine.ino) {
      throw new AgentError(`${label} points at ${target}, which is no longer the folder the agent created: refusing to use it`);
    }
    return true;
  }

  private writeKeystore(keystore: string, enclaves: HeldEnclave[], digest: string): void {
    if (!isKeystoreName(keystore)) throw new AgentError(`invalid keystore name ${keystore}`);
    this.ownsLink(keystore); // refuse before writing anything if the slot holds something foreign
    const base = this.verify();
    const generation = this.createGeneration(base, keystore, enclaves);
    const tempLink = `${base}/${generation.name}${TEMP_LINK_SUFFIX}`;
    try {
      this.buildTree(base, generation, enclaves);
      this.verify(); // once more right before the swap
      fs.symlinkSync(generation.name, tempLink);
      fs.renameSync(tempLink, `${base}/${keystore}`);
    } catch (err) {
      for (const cleanup of [() => removeTree(base, `${generation.name}${TEMP_LINK_SUFFIX}`), () => removeTree(base, generation.name, inGeneration, generation)]) {
        try {
          cleanup();
        } catch {
          // keep the first error
        }
      }
      throw err;
    }
    const previous = this.links.get(keystore);
    this.links.set(keystore, { ...generation, digest });
    const kept = this.retired.get(keystore) ?? [];
    if (previous) kept.push({ ...previous, until: Date.now() + this.retainMs });
    // An enclave that is gone from the keystore (revoked, unbound, expired) must not linger in a kept generation.
    const current = new Set(generation.paths);
    for (const old of kept) this.scrub(base, old, current);
    this.retired.set(keystore, kept);
  }

  private createGeneration(base: string, keystore: string, enclaves: HeldEnclave[]): Generation {
    for (let i = 0; i < 1000; i++) {
      const name = `.${keystore}.g${this.tag}-${++this.counter}`;
      try {
        createDir(`${base}/${name}`, this.dirMode, this.gid);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw err;
      }
      const st = fs.lstatSync(`${base}/${name}`);
      return { name, dev: st.dev, ino: st.ino, paths: enclaves.map((e) => e.path) };
    }
    throw new AgentError(`cannot create a new folder for keystore ${keystore} in ${this.dir}`);
  }

  /** Fills the new generation through its open folder, so every file lands in the folder just made. */
  private buildTree(base: string, generation: Generation, enclaves: HeldEnclave[]): void {
    const gen = openDir(`${base}/${generation.name}`, generation);
    try {
      const root = `${gen.path}/enclaves`;
      createDir(root, this.dirMode, this.gid);
      const made = new Set<string>([root]);
      for (const enclave of [...enclaves].sort((a, b) => a.path.localeCompare(b.path))) {
        let dir = root;
        for (const part of enclave.path.split('/').slice(1)) {
          dir = `${dir}/${part}`;
          if (!made.has(dir)) {
            createDir(dir, this.dirMode, this.gid);
            made.add(dir);
          }
        }
        for (const name of Object.keys(enclave.files).sort()) {
          createFile(`${dir}/${name}`, enclave.files[name as RuntimeFileName]!, this.fileMode, { gid: this.gid });
        }
      }
    } finally {
      closeDir(gen);
    }
  }

  /** Deletes from a kept generation the enclaves that are not in `keep`. */
  private scrub(base: string, generation: Generation, keep: Set<string>): void {
    const gone = generation.paths.filter((p) => !keep.has(p));
    if (gone.length === 0) return;
    for (const path of gone) this.removeEnclaveFiles(base, generation, path);
    generation.paths = generation.paths.filter((p) => keep.has(p));
  }

  /** Removes one enclave's files (and its folders that become empty) from a generation, following no link. */
  private removeEnclaveFiles(base: string, generation: Generation, path: string): void {
    const parts = ['enclaves', ...path.split('/').slice(1)];
    const opened: OpenDir[] = [];
    try {
      opened.push(openDir(`${base}/${generation.name}`, generation));
      for (const part of parts) {
        const next = `${opened[opened.length - 1]!.path}/${part}`;
        if (!lstatOrNull(next)) return;
        opened.push(openDir(next));
      }
      const leaf = opened[opened.length - 1]!.path;
      for (const file of RUNTIME_FILES) {
        if (lstatOrNull(`${leaf}/${file}`)) fs.unlinkSync(`${leaf}/${file}`);
      }
      // Folders up to (not including) enclaves/ that are now empty; a nested enclave keeps its parents.
      for (let i = opened.length - 1; i >= 2; i--) {
        try {
          fs.rmdirSync(`${opened[i - 1]!.path}/${parts[i - 1]}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOTEMPTY') break;
          throw err;
        }
      }
    } finally {
      for (const d of opened) closeDir(d);
    }
  }

  /** Deletes kept generations whose time is up (all of them with `all`), and arms a timer for the rest. */
  private sweep(all = false): void {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    const base = this.guard.base;
    const now = Date.now();
    let next = Infinity;
    for (const [keystore, kept] of this.retired) {
      const stay = kept.filter((g) => !all && g.until > now);
      for (const g of kept) if (!stay.includes(g)) removeTree(base, g.name, inGeneration, g);
      if (stay.length > 0) this.retired.set(keystore, stay);
      else this.retired.delete(keystore);
      for (const g of stay) next = Math.min(next, g.until);
    }
    if (next !== Infinity) {
      this.sweepTimer = setTimeout(() => {
        this.sweepTimer = undefined;
        try {
          this.verify();
          this.sweep();
        } catch (err) {
          this.opts.onError?.(err);
        }
      }, Math.max(next - now, 0) + 10);
      this.sweepTimer.unref();
    }
  }

  private removeKeystore(keystore: string): void {
    const entry = this.links.get(keystore);
    const base = this.verify();
    if (this.ownsLink(keystore)) fs.unlinkSync(`${base}/${keystore}`);
    this.links.delete(keystore);
    // Nothing of it is held any more (revoked, unbound, expired): no generation of it is kept.
    if (entry) removeTree(base, entry.name, inGeneration, entry);
    for (const g of this.retired.get(keystore) ?? []) removeTree(base, g.name, inGeneration, g);
    this.retired.delete(keystore);
  }

  /**
   * Removes every enclave the agent keeps here (this process's, kept generations, and any an earlier process
   * left behind), the status file and stale lock files. Entries not named by the agent's scheme, also inside
   * generations, are reported and left alone; symlinks are unlinked, never followed. The folder must pass
   * the same checks as for writing, and must not be in use by another live agent. Once this writer has
   * checked its folder, it purges that folder (the one it wrote to), even if the path has since been
   * replaced. Returns the number of keystores removed.
   */
  purge(): { keystores: number; foreign: string[] } {
    clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    if (!this.guard.verified && !lstatOrNull(this.dir)) {
      this.links.clear();
      this.retired.clear();
      return { keystores: 0, foreign: [] };
    }
    let base: string;
    try {
      base = this.verify();
    } catch (err) {
      if (!this.guard.verified) throw err;
      base = this.guard.base; // the folder this writer checked and wrote to (its path was replaced)
    }
    const other = this.lockFile.isHeld ? undefined : this.lockFile.liveOther(base);
    if (other !== undefined) {
      throw new AgentError(`runtime folder ${this.dir} is in use by enclave-agent pid ${other}: stop it before purging`);
    }
    const names = fs.readdirSync(base);
    let keystores = 0;
    const foreign: string[] = [];
    // Links first, so that new lookups fail at once; then the trees behind them.
    for (const name of names) {
      if (!isKeystoreName(name)) continue;
      const path = `${base}/${name}`;
      const st = lstatOrNull(path);
      if (st?.isSymbolicLink() && generationKeystore(fs.readlinkSync(path)) === name) {
        fs.unlinkSync(path);
        keystores++;
      } else if (st) {
        foreign.push(name);
      }
    }
    for (const name of names) {
      const st = lstatOrNull(`${base}/${name}`);
      const slot: boolean = isKeystoreName(name);
      if (!st || slot) continue;
      const linkOf = name.endsWith(TEMP_LINK_SUFFIX) ? generationKeystore(name.slice(0, -TEMP_LINK_SUFFIX.length)) : undefined;
      if (linkOf !== undefined && st.isSymbolicLink()) {
        fs.unlinkSync(`${base}/${name}`);
      } else if (generationKeystore(name) !== undefined && st.isDirectory()) {
        foreign.push(...removeTree(base, name, inGeneration, st).map((rel) => `${name}/${rel}`));
      } else if ((name === STATUS_FILE || name.startsWith(`${STATUS_FILE}.tmp-`)) && !st.isDirectory()) {
        fs.unlinkSync(`${base}/${name}`);
      } else if (name === LOCK_FILE || (LOCK_TEMP.test(name) && RuntimeLock.tempIsStale(name))) {
        // .lock: ours (released by close()) or stale (liveOther removed it); temporary names of dead processes go
        if (name !== LOCK_FILE && !st.isDirectory()) fs.unlinkSync(`${base}/${name}`);
      } else {
        foreign.push(name);
      }
    }
    this.links.clear();
    this.retired.clear();
    return { keystores, foreign: foreign.sort() };
  }
}
