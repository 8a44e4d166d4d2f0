/**
 * File helpers that never follow a symlink: every check uses lstat, every file is created with
 * O_CREAT|O_EXCL|O_NOFOLLOW (which also fails on a dangling symlink), folders are opened with
 * O_DIRECTORY|O_NOFOLLOW, and removal unlinks links instead of descending into them.
 *
 * Race-free paths: Node has no openat()/unlinkat(), so a folder that has been opened (and checked with
 * fstat) is named through `/proc/self/fd/N`. A lookup through that name always reaches the folder that was
 * opened, even if its path was renamed, replaced by a symlink or mounted over in the meantime. Without
 * /proc (unusual on Linux) the plain path is used, after the same dev/inode checks.
 */
import * as fs from 'node:fs';
import { constants } from 'node:fs';
import { basename, dirname } from 'node:path';
import { AgentError } from './errors.js';

const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const PROC_FD = '/proc/self/fd';

let procFd: boolean | undefined;

/** True when /proc/self/fd/N can name an open folder. */
export function haveProcFd(): boolean {
  if (procFd === undefined) {
    try {
      procFd = fs.statSync(PROC_FD).isDirectory();
    } catch {
      procFd = false;
    }
  }
  return procFd;
}

export function lstatOrNull(path: string): fs.Stats | null {
  try {
    return fs.lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Writes all of `data` at the file's current offset: write(2) may write less than asked (a full tmpfs). */
export function writeAll(fd: number, data: Buffer): void {
  let off = 0;
  while (off < data.length) {
    const n = fs.writeSync(fd, data, off, data.length - off);
    if (n <= 0) {
      const err: NodeJS.ErrnoException = new Error(`write returned ${n} with ${data.length - off} bytes left`);
      err.code = 'EIO';
      throw err;
    }
    off += n;
  }
}

/**
 * Creates a new file (it must not exist, not even as a symlink) with exactly `mode` (umask does not apply)
 * and, when given, group `gid`. Every byte is written or it throws (ENOSPC on a full tmpfs).
 */
export function createFile(path: string, data: string | Buffer, mode: number, opts: { gid?: number; fsync?: boolean } = {}): void {
  const fd = fs.openSync(path, CREATE_FLAGS, mode);
  try {
    fs.fchmodSync(fd, mode);
    if (opts.gid !== undefined) fs.fchownSync(fd, -1, opts.gid);
    writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data);
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

/** A folder held open: `path` names exactly this folder for as long as `fd` is open. */
export interface OpenDir {
  fd: number;
  path: string;
  dev: number;
  ino: number;
}

/**
 * Opens a folder without following a symlink (O_DIRECTORY|O_NOFOLLOW). With `expect`, the opened folder must
 * be that one (same device and inode), or it throws: the path was swapped after it was checked.
 */
export function openDir(path: string, expect?: { dev: number; ino: number }): OpenDir {
  let fd: number;
  try {
    fd = fs.openSync(path, DIR_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP' || code === 'ENOTDIR') throw new AgentError(`${path} is not a folder (or is a symlink): refusing to follow it`);
    throw err;
  }
  try {
    const st = fs.fstatSync(fd);
    if (expect && (st.dev !== expect.dev || st.ino !== expect.ino)) {
      throw new AgentError(`${path} changed while it was being used (another folder took its place): refusing to touch it`);
    }
    return { fd, path: haveProcFd() ? `${PROC_FD}/${fd}` : path, dev: st.dev, ino: st.ino };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

export function closeDir(d: OpenDir | undefined): void {
  if (d) fs.closeSync(d.fd);
}

/** Creates a new folder (it must not exist) with exactly `mode` and, when given, group `gid`. */
export function createDir(path: string, mode: number, gid?: number): void {
  fs.mkdirSync(path, { mode });
  const d = openDir(path); // the folder just made, not something that replaced it
  try {
    fs.fchmodSync(d.fd, mode); // mkdir's mode is filtered by the umask
    if (gid !== undefined) fs.fchownSync(d.fd, -1, gid);
  } finally {
    closeDir(d);
  }
}

/** Which entries of a tree may be removed: `rel` is relative to the tree's top, `/`-separated. */
export type RemoveFilter = (rel: string, isDir: boolean) => boolean;

/**
 * Removes the entry `name` of the folder `parent` (a path, or the /proc/self/fd name of an open folder) and,
 * for a folder, everything below it that `accept` allows, never following a symlink: each folder is opened
 * with O_NOFOLLOW, checked against what lstat saw, and its entries are reached through the open descriptor,
 * so a folder swapped for a symlink mid-way is never descended into. With `expect`, the top must be that
 * folder. Returns what was left (relative paths) because `accept` refused it.
 */
export function removeTree(parent: string, name: string, accept: RemoveFilter = () => true, expect?: { dev: number; ino: number }): string[] {
  const left: string[] = [];
  const path = `${parent}/${name}`;
  const st = lstatOrNull(path);
  if (!st) return left;
  if (expect && (st.dev !== expect.dev || st.ino !== expect.ino)) {
    throw new AgentError(`${name} is not the folder the agent created: refusing to remove it`);
  }
  if (!st.isDirectory()) {
    fs.unlinkSync(path);
    return left;
  }
  removeChildren(path, st, '', accept, left);
  rmdirIfEmpty(path, left);
  return left;
}

function removeChildren(path: string, st: fs.Stats, rel: string, accept: RemoveFilter, left: string[]): void {
  let d: OpenDir;
  try {
    d = openDir(path, st);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    for (const child of fs.readdirSync(d.path)) {
      const childRel = rel ? `${rel}/${child}` : child;
      const childPath = `${d.path}/${child}`;
      const cst = lstatOrNull(childPath);
      if (!cst) continue;
      const isDir = cst.isDirectory();
      if (!accept(childRel, isDir)) {
        left.push(childRel);
        continue;
      }
      if (isDir) {
        removeChildren(childPath, cst, childRel, accept, left);
        rmdirIfEmpty(childPath, left);
      } else {
        fs.unlinkSync(childPath);
      }
    }
  } finally {
    closeDir(d);
  }
}

function rmdirIfEmpty(path: string, left: string[]): void {
  try {
    fs.rmdirSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || (code === 'ENOTEMPTY' && left.length > 0)) return;
    throw err;
  }
}

/** Removes a file, a symlink (never its target) or a whole folder tree without following any link. */
export function removeEntry(path: string): boolean {
  if (!lstatOrNull(path)) return false;
  removeTree(dirname(path), basename(path));
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
