/**
 * The runtime folder: where enclaves live on the robot. It must be on a RAM file system (tmpfs or ramfs) so
 * private keys never reach a disk, must be a real folder (not a symlink), owned by the agent's user and not
 * writable by anyone else, under parents that no other user can change. `RuntimeDirGuard` checks all of it
 * again before every write.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { AgentError } from './errors.js';
import { closeDir, lstatOrNull, openDir, type OpenDir } from './fsutil.js';

export const TMPFS_MAGIC = 0x01021994;
export const RAMFS_MAGIC = 0x858458f6;

const KNOWN_FS: Record<number, string> = {
  0xef53: 'ext2/3/4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x794c7630: 'overlayfs',
  0x6969: 'nfs',
  0x2fc12fc1: 'zfs',
  0x01021997: '9p',
  0x65735546: 'fuse',
  0x73717368: 'squashfs',
  0x4d44: 'vfat',
  0x5346544e: 'ntfs',
};

export type RamFs = 'tmpfs' | 'ramfs';

/** 'tmpfs' or 'ramfs', or a description of the file system that holds `path`. */
export function fileSystemOf(path: string): { ram: RamFs | null; name: string } {
  const type = fs.statfsSync(path).type >>> 0;
  if (type === TMPFS_MAGIC) return { ram: 'tmpfs', name: 'tmpfs' };
  if (type === RAMFS_MAGIC) return { ram: 'ramfs', name: 'ramfs' };
  return { ram: null, name: `${KNOWN_FS[type] ?? 'a disk file system'} (0x${type.toString(16)})` };
}

function nearestExisting(path: string): string {
  let p = path;
  while (!lstatOrNull(p)) {
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  return p;
}

function refuseNotRam(dir: string, fsName: string): never {
  throw new AgentError(
    `runtime folder ${dir} is on ${fsName}, not tmpfs or ramfs: refusing to write enclave keys where they could reach a disk ` +
      '(use a tmpfs folder such as /run/enclave-agent or /dev/shm/...)',
  );
}

/** The proper ancestors of an absolute path, from `/` down: `/a/b/c` → `/`, `/a`, `/a/b`. */
function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let p = dirname(path); ; p = dirname(p)) {
    out.unshift(p);
    if (dirname(p) === p) break;
  }
  return out;
}

/**
 * Checks every folder above the runtime folder, as written and after resolving symlinks: each must belong to
 * root or to this agent's user, and must not be writable by group or others unless it has the sticky bit
 * (like /dev/shm or /tmp: others may add entries there but not rename or remove ours). Otherwise another
 * user could rename the runtime folder away and put a folder of their own (on a disk, say) in its place.
 * Returns the nearest shared (sticky, writable by others) ancestor, if any.
 */
export function checkParents(dirArg: string): string | undefined {
  const dir = resolve(dirArg);
  const uid = process.getuid?.();
  const paths = ancestors(dir);
  try {
    paths.push(...ancestors(join(fs.realpathSync(dirname(dir)), 'x')));
  } catch {
    // the parent does not exist yet: the path as written is checked
  }
  let shared: string | undefined;
  for (const p of new Set(paths)) {
    const st = lstatOrNull(p);
    if (!st || st.isSymbolicLink()) continue; // a link is as safe as its folder (checked too); its target is in `paths`
    if (!st.isDirectory()) throw new AgentError(`runtime folder ${dir}: ${p} is not a folder`);
    if (uid !== undefined && st.uid !== 0 && st.uid !== uid) {
      throw new AgentError(
        `runtime folder ${dir}: the folder above it, ${p}, belongs to uid ${st.uid} (not root, not this agent): ` +
          'that user could replace the runtime folder; use a folder whose parents belong to root or to this agent',
      );
    }
    if ((st.mode & 0o022) !== 0) {
      if ((st.mode & 0o1000) === 0) {
        throw new AgentError(
          `runtime folder ${dir}: the folder above it, ${p}, is writable by others (mode ${(st.mode & 0o7777).toString(8)}) ` +
            'without the sticky bit: another user could replace the runtime folder',
        );
      }
      shared = p;
    }
  }
  return shared;
}

/**
 * Makes sure `dir` is a usable runtime folder, creating it (0700, or 0750 with a group) when missing.
 * Checks the file system before creating anything, so nothing is written on a disk.
 */
export function prepareRuntimeDir(dirArg: string, gid?: number): RamFs {
  const dir = resolve(dirArg);
  let st = lstatOrNull(dir);
  const probe = st ? dir : nearestExisting(dir);
  const before = fileSystemOf(probe);
  if (!before.ram) refuseNotRam(dir, before.name);
  checkParents(dir); // before creating anything
  const mode = gid === undefined ? 0o700 : 0o750;
  if (!st) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(dir, mode);
    if (gid !== undefined) fs.chownSync(dir, -1, gid);
    st = fs.lstatSync(dir);
  }
  checkRuntimeDir(dir, st);
  // The folder itself may be a mount point of another file system.
  const after = fileSystemOf(dir);
  if (!after.ram) refuseNotRam(dir, after.name);
  if (gid !== undefined && (st.gid !== gid || (st.mode & 0o777) !== mode)) {
    // ROS processes of the group must be able to traverse it (systemd creates it 0700).
    fs.chownSync(dir, -1, gid);
    fs.chmodSync(dir, mode);
  }
  checkRuntimeDir(dir);
  return after.ram;
}

/**
 * A runtime folder must be a real folder of ours that nobody else can write into; inside a shared folder
 * (sticky /dev/shm or /tmp) it must also be 0700 or 0750, and every folder above it must be safe
 * (`checkParents`).
 */
export function checkRuntimeDir(dir: string, st: fs.Stats | null = lstatOrNull(dir)): void {
  if (!st) throw new AgentError(`runtime folder ${dir} does not exist`);
  if (st.isSymbolicLink()) throw new AgentError(`runtime folder ${dir} is a symlink: refusing to follow it`);
  if (!st.isDirectory()) throw new AgentError(`runtime folder ${dir} is not a folder`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new AgentError(`runtime folder ${dir} belongs to uid ${st.uid}, not to this agent (uid ${uid}): refusing to use it`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new AgentError(`runtime folder ${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)}): use a private folder`);
  }
  const shared = checkParents(dir);
  if (shared !== undefined && (st.mode & 0o027) !== 0) {
    throw new AgentError(
      `runtime folder ${dir} is inside the shared folder ${shared} and must be 0700 (or 0750 with --group), ` +
        `not ${(st.mode & 0o7777).toString(8)}`,
    );
  }
}

function describeId(st: { dev: number; ino: number }): string {
  return `${st.dev}:${st.ino}`;
}

/**
 * Guards one runtime folder for the life of a process. The first `verify()` runs every check (RAM file
 * system, real folder, owner, mode, parents) and opens the folder (O_DIRECTORY|O_NOFOLLOW), remembering its
 * device and inode. Every later `verify()`, which the writer calls before each write, swap and removal,
 * runs the checks again and also requires the path to still be that same folder: a folder mounted over it,
 * or renamed into its place, is refused and nothing is written there. The writer then works through the
 * open folder (`base`), so what it writes lands in the folder that was checked.
 */
export class RuntimeDirGuard {
  private pinned: OpenDir | undefined;

  constructor(readonly dir: string) {}

  /** The checked folder: its /proc/self/fd name once verified (its plain path before). */
  get base(): string {
    return this.pinned?.path ?? this.dir;
  }

  get verified(): boolean {
    return this.pinned !== undefined;
  }

  /** Device and inode of the checked folder. */
  get identity(): { dev: number; ino: number } | undefined {
    return this.pinned && { dev: this.pinned.dev, ino: this.pinned.ino };
  }

  /** Runs every check; throws AgentError when anything is wrong or changed. Returns `base`. */
  verify(): string {
    const st = lstatOrNull(this.dir);
    checkRuntimeDir(this.dir, st);
    if (this.pinned && (st!.dev !== this.pinned.dev || st!.ino !== this.pinned.ino)) {
      const now = fileSystemOf(this.dir);
      throw new AgentError(
        `runtime folder ${this.dir} was replaced after the agent checked it (device:inode ${describeId(this.pinned)} is now ` +
          `${describeId(st!)}, on ${now.name}: a mount or a rename): refusing to write enclave keys there`,
      );
    }
    const now = fileSystemOf(this.dir);
    if (!now.ram) refuseNotRam(this.dir, now.name);
    if (!this.pinned) this.pinned = openDir(this.dir, st!);
    return this.pinned.path;
  }

  close(): void {
    closeDir(this.pinned);
    this.pinned = undefined;
  }
}

/** Resolves a group name (or number) to a gid: /etc/group first, then NSS through getent. */
export function resolveGroup(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const [group, , gid] = line.split(':');
      if (group === name && gid && /^\d+$/.test(gid)) return Number(gid);
    }
  } catch {
    // no /etc/group: ask NSS below
  }
  try {
    const out = execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
    const gid = out.split(':')[2];
    if (gid && /^\d+$/.test(gid)) return Number(gid);
  } catch {
    // not found
  }
  throw new AgentError(`group ${name} does not exist`);
}
