/**
 * One agent per runtime folder. Node has no flock(2), so the lock is a file, `<runtime>/.lock`, holding
 * `PID STARTTIME TOKEN`: STARTTIME is the process start time from /proc/PID/stat, so a PID that the kernel
 * gave to an unrelated process after a crash does not look like a live agent. The file is made complete under
 * a temporary name and then hard-linked to `.lock` (link(2) fails if `.lock` exists), so nobody ever reads a
 * half-written lock. A lock whose process is gone is stale and is taken over. The holder checks before each
 * write that `.lock` still holds its own token.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { constants } from 'node:fs';
import { AgentError } from './errors.js';
import { createFile } from './fsutil.js';

export const LOCK_FILE = '.lock';
/** Temporary names of lock files (`.lock.<pid>-<hex>`): made by `acquire`, removed right after. */
export const LOCK_TEMP = /^\.lock\.(\d+)-[0-9a-f]+$/;

interface Holder {
  pid: number;
  start: string;
  raw: string;
}

/** The process start time (clock ticks since boot, field 22 of /proc/PID/stat), or null when unknown. */
export function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // field 3 (state) onwards
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

/** True when a process with this pid exists and has not exited (EPERM: it exists but belongs to someone else). */
export function isAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return !isZombie(pid);
}

function holderAlive(h: Holder): boolean {
  if (!isAlive(h.pid)) return false;
  if (h.start === '-') return true;
  const now = processStart(h.pid);
  return now === null || now === h.start;
}

/** Reads `.lock` without following a symlink; null when it does not exist. */
function readHolder(path: string): Holder | null {
  let fd: number;
  try {
    fd = fs.openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new AgentError(`${path} is a symlink the agent did not create: refusing to follow it`);
    throw err;
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new AgentError(`${path} is not a lock file the agent created`);
    const buf = Buffer.alloc(256);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const raw = buf.subarray(0, n).toString('utf8');
    const m = /^(\d+) (\d+|-) ([0-9a-f]+)\n$/.exec(raw);
    return m ? { pid: Number(m[1]), start: m[2]!, raw } : { pid: 0, start: '-', raw }; // garbage: stale
  } finally {
    fs.closeSync(fd);
  }
}

export class RuntimeLock {
  private held = false;
  private readonly token = randomBytes(8).toString('hex');
  private readonly content = `${process.pid} ${processStart(process.pid) ?? '-'} ${this.token}\n`;

  /** `label` names the runtime folder in messages. */
  constructor(private readonly label: string) {}

  get isHeld(): boolean {
    return this.held;
  }

  /** Takes `<base>/.lock`; throws AgentError when a live agent holds it. */
  acquire(base: string): void {
    if (this.held) return;
    const lockPath = `${base}/${LOCK_FILE}`;
    const tmp = `${base}/.lock.${process.pid}-${this.token}`;
    createFile(tmp, this.content, 0o600);
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          fs.linkSync(tmp, lockPath);
          this.held = true;
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const holder = readHolder(lockPath);
        if (!holder) continue;
        if (holder.raw === this.content) {
          this.held = true;
          return;
        }
        if (holderAlive(holder)) throw this.busy(holder.pid);
        this.removeStale(base, lockPath, holder.raw);
      }
      throw new AgentError(`could not take the lock ${this.label}/${LOCK_FILE}`);
    } finally {
      try {
        fs.unlinkSync(tmp);
      } catch {
        // already gone
      }
    }
  }

  private busy(pid: number): AgentError {
    return new AgentError(
      `runtime folder ${this.label} is in use by another enclave-agent (pid ${pid}): refusing to run a second agent on it ` +
        '(stop that one, or use another --runtime-dir)',
    );
  }

  /**
   * Moves the stale lock aside, then checks that what was moved is the stale lock: if another agent took the
   * lock in between, its lock is put back and the next round reports it.
   */
  private removeStale(base: string, lockPath: string, staleRaw: string): void {
    const aside = `${base}/.lock.${process.pid}-${randomBytes(4).toString('hex')}`;
    try {
      fs.renameSync(lockPath, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      const moved = readHolder(aside);
      if (moved && moved.raw !== staleRaw) {
        try {
          fs.linkSync(aside, lockPath);
        } catch {
          // someone else holds it now: the next round sees that
        }
      }
    } finally {
      fs.unlinkSync(aside);
    }
  }

  /** Throws unless `.lock` still holds this process's token (someone removed or replaced it). */
  check(base: string): void {
    if (!this.held) return;
    const holder = readHolder(`${base}/${LOCK_FILE}`);
    if (holder?.raw !== this.content) {
      this.held = false;
      throw new AgentError(
        `the lock ${this.label}/${LOCK_FILE} was ${holder ? `taken by pid ${holder.pid}` : 'removed'} while this agent held it: ` +
          'refusing to write (another agent may be using the folder)',
      );
    }
  }

  /** Another live agent's pid when it holds `<base>/.lock`; removes a stale lock. */
  liveOther(base: string): number | undefined {
    const lockPath = `${base}/${LOCK_FILE}`;
    const holder = readHolder(lockPath);
    if (!holder || holder.raw === this.content) return undefined;
    if (holderAlive(holder)) return holder.pid;
    this.removeStale(base, lockPath, holder.raw);
    return undefined;
  }

  /** Whether a temporary lock name belongs to a process that is gone (or to this one). */
  static tempIsStale(name: string): boolean {
    const m = LOCK_TEMP.exec(name);
    return m !== null && (Number(m[1]) === process.pid || !isAlive(Number(m[1])));
  }

  /** Removes `.lock` if it is still ours. */
  release(base: string): void {
    if (!this.held) return;
    this.held = false;
    try {
      if (readHolder(`${base}/${LOCK_FILE}`)?.raw === this.content) fs.unlinkSync(`${base}/${LOCK_FILE}`);
    } catch {
      // the folder is gone or not ours any more: nothing to release
    }
  }
}
