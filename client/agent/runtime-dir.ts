/**
 * The runtime folder: where enclaves live on the robot. It must be on a RAM file system (tmpfs or ramfs) so
 * private keys never reach a disk, must be a real folder (not a symlink), owned by the agent's user and not
 * writable by anyone else.
 */
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { AgentError } from './errors.js';
import { lstatOrNull } from './fsutil.js';

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
  return after.ram;
}

/** A runtime folder must be a real folder of ours that nobody else can write into. */
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
