/**
 * Writes enclaves into the runtime folder so that a reader never sees a partial or mixed enclave.
 *
 * Layout (the scheme is described in README.md, "Runtime folder"):
 *
 *   <runtime>/<keystore>            symlink -> .<keystore>.<n>   (ROS_SECURITY_KEYSTORE points here)
 *   <runtime>/.<keystore>.<n>/      one complete generation of that keystore
 *       enclaves/<a>/<b>/<file>     the runtime files of enclave /a/b
 *   <runtime>/.status.json          what `run` holds, for `enclave-agent status`
 *
 * An update builds a complete new generation next to the old one (new folders, files created with
 * O_EXCL|O_NOFOLLOW), points a new symlink at it and renames that symlink over `<keystore>`: rename(2) is
 * atomic, so a path lookup resolves either entirely to the old generation or entirely to the new one. Then
 * the old generation is deleted. Files are never modified in place.
 *
 * The writer only ever replaces a `<keystore>` symlink it created itself in this process (it remembers the
 * target); anything else found there is an error, never followed. `purge()` also recognises what an earlier
 * agent process left behind (same naming) and removes it without following links.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { isKeystoreName, type RuntimeFileName } from '../common/names.js';
import { enclaveDigest, type HeldEnclave } from './bundle.js';
import { AgentError } from './errors.js';
import { createDir, createFile, lstatOrNull, removeEntry } from './fsutil.js';
import { checkRuntimeDir } from './runtime-dir.js';

export const STATUS_FILE = '.status.json';

const GENERATION = /^\.(.+)\.(\d+)$/;
const TEMP_LINK = /^\.(.+)\.(\d+)\.link$/;

function isGenerationOf(keystore: string, target: string): boolean {
  const m = GENERATION.exec(target);
  return m !== null && m[1] === keystore;
}

export interface ApplyResult {
  /** Keystores whose tree was (re)written. */
  written: string[];
  /** Keystores removed because nothing of them is held any more. */
  removed: string[];
}

export class RuntimeWriter {
  /** keystore -> the generation folder our symlink points at, and the digest of what it holds. */
  private readonly links = new Map<string, { generation: string; digest: string }>();
  private counter = 0;
  private readonly dirMode: number;
  private readonly fileMode: number;

  constructor(
    readonly dir: string,
    private readonly gid?: number,
  ) {
    this.dirMode = gid === undefined ? 0o700 : 0o750;
    this.fileMode = gid === undefined ? 0o600 : 0o640;
  }

  /** Keystores currently linked. */
  keystores(): string[] {
    return [...this.links.keys()];
  }

  /** Makes the runtime folder hold exactly `enclaves`: changed keystores are swapped in, others removed. */
  apply(enclaves: HeldEnclave[]): ApplyResult {
    checkRuntimeDir(this.dir);
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
    return result;
  }

  /** True when `<runtime>/<keystore>` is the symlink this writer made; throws when something else is there. */
  private ownsLink(keystore: string): boolean {
    const linkPath = join(this.dir, keystore);
    const st = lstatOrNull(linkPath);
    if (!st) return false;
    if (!st.isSymbolicLink()) {
      throw new AgentError(`${linkPath} exists and was not created by the agent: refusing to replace it`);
    }
    const target = fs.readlinkSync(linkPath);
    if (this.links.get(keystore)?.generation !== target) {
      throw new AgentError(`${linkPath} is a symlink the agent did not create (to ${target}): refusing to follow or replace it`);
    }
    return true;
  }

  private writeKeystore(keystore: string, enclaves: HeldEnclave[], digest: string): void {
    if (!isKeystoreName(keystore)) throw new AgentError(`invalid keystore name ${keystore}`);
    this.ownsLink(keystore); // refuse before writing anything if the slot holds something foreign
    const generation = this.createGeneration(keystore);
    const genPath = join(this.dir, generation);
    const tempLink = join(this.dir, `${generation}.link`);
    try {
      this.buildTree(genPath, enclaves);
      removeEntry(tempLink);
      fs.symlinkSync(generation, tempLink);
      fs.renameSync(tempLink, join(this.dir, keystore));
    } catch (err) {
      removeEntry(tempLink);
      removeEntry(genPath);
      throw err;
    }
    const previous = this.links.get(keystore);
    this.links.set(keystore, { generation, digest });
    if (previous) removeEntry(join(this.dir, previous.generation));
  }

  private createGeneration(keystore: string): string {
    for (let i = 0; i < 1000; i++) {
      const name = `.${keystore}.${++this.counter}`;
      try {
        createDir(join(this.dir, name), this.dirMode, this.gid);
        return name;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    throw new AgentError(`cannot create a new folder for keystore ${keystore} in ${this.dir}`);
  }

  private buildTree(genPath: string, enclaves: HeldEnclave[]): void {
    const root = join(genPath, 'enclaves');
    createDir(root, this.dirMode, this.gid);
    const made = new Set<string>([root]);
    for (const enclave of [...enclaves].sort((a, b) => a.path.localeCompare(b.path))) {
      let dir = root;
      for (const part of enclave.path.split('/').slice(1)) {
        dir = join(dir, part);
        if (!made.has(dir)) {
          createDir(dir, this.dirMode, this.gid);
          made.add(dir);
        }
      }
      for (const name of Object.keys(enclave.files).sort()) {
        createFile(join(dir, name), enclave.files[name as RuntimeFileName]!, this.fileMode, { gid: this.gid });
      }
    }
  }

  private removeKeystore(keystore: string): void {
    const entry = this.links.get(keystore);
    if (this.ownsLink(keystore)) fs.unlinkSync(join(this.dir, keystore));
    this.links.delete(keystore);
    if (entry) removeEntry(join(this.dir, entry.generation));
  }

  /**
   * Removes every enclave the agent keeps here (this process's and any an earlier process left behind),
   * and the status file. Entries not named by the agent's scheme are left alone; symlinks are unlinked,
   * never followed. Returns the number of keystores removed.
   */
  purge(): { keystores: number; foreign: string[] } {
    const dirSt = lstatOrNull(this.dir);
    if (!dirSt) {
      this.links.clear();
      return { keystores: 0, foreign: [] };
    }
    if (dirSt.isSymbolicLink()) throw new AgentError(`runtime folder ${this.dir} is a symlink: refusing to follow it`);
    if (!dirSt.isDirectory()) throw new AgentError(`runtime folder ${this.dir} is not a folder`);
    const names = fs.readdirSync(this.dir);
    let keystores = 0;
    const foreign: string[] = [];
    // Links first, so that new lookups fail at once; then the trees behind them.
    for (const name of names) {
      if (!isKeystoreName(name)) continue;
      const path = join(this.dir, name);
      const st = lstatOrNull(path);
      if (st?.isSymbolicLink() && isGenerationOf(name, fs.readlinkSync(path))) {
        fs.unlinkSync(path);
        keystores++;
      } else if (st) {
        foreign.push(name);
      }
    }
    for (const name of names) {
      const m = TEMP_LINK.exec(name) ?? GENERATION.exec(name);
      if (m && isKeystoreName(m[1])) removeEntry(join(this.dir, name));
      else if (name === STATUS_FILE || name.startsWith(`${STATUS_FILE}.tmp-`)) removeEntry(join(this.dir, name));
    }
    this.links.clear();
    return { keystores, foreign };
  }
}
