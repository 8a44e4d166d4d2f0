/**
 * File helpers that never follow a symlink: every check uses lstat, every file is created with
 * O_CREAT|O_EXCL|O_NOFOLLOW (which also fails on a dangling symlink), and removal unlinks links instead of
 * descending into them.
 */
import * as fs from 'node:fs';
import { constants } from 'node:fs';

const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

export function lstatOrNull(path: string): fs.Stats | null {
  try {
    return fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Creates a new file (it must not exist, not even as a symlink) with exactly `mode` (umask does not apply)
 * and, when given, group `gid`.
 */
export function createFile(path: string, data: string | Buffer, mode: number, opts: { gid?: number; fsync?: boolean } = {}): void {
  const fd = fs.openSync(path, CREATE_FLAGS, mode);
  try {
    fs.fchmodSync(fd, mode);
    if (opts.gid !== undefined) fs.fchownSync(fd, -1, opts.gid);
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    if (opts.fsync) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `path` by creating a temporary sibling and renaming it over the old file (readers see old or new). */
export function replaceFile(path: string, data: string | Buffer, mode: number, opts: { gid?: number; fsync?: boolean } = {}): void {
  const tmp = `${path}.tmp-${process.pid}`;
  removeEntry(tmp);
  try {
    createFile(tmp, data, mode, opts);
    fs.renameSync(tmp, path);
  } catch (err) {
    removeEntry(tmp);
    throw err;
  }
}

/** Creates a new folder (it must not exist) with exactly `mode` and, when given, group `gid`. */
export function createDir(path: string, mode: number, gid?: number): void {
  fs.mkdirSync(path, { mode });
  fs.chmodSync(path, mode); // mkdir's mode is filtered by the umask
  if (gid !== undefined) fs.chownSync(path, -1, gid);
}

/** Removes a file, a symlink (never its target) or a whole folder tree without following any link. */
export function removeEntry(path: string): boolean {
  const st = lstatOrNull(path);
  if (!st) return false;
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(path)) removeEntry(`${path}/${name}`);
    fs.rmdirSync(path);
  } else {
    fs.unlinkSync(path);
  }
  return true;
}

/** Reads a file without following a symlink at its last component. */
export function readFileNoFollow(path: string): Buffer {
  const fd = fs.openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
