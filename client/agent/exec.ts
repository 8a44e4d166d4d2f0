/**
 * `enclave-agent exec --enclave KS:PATH -- COMMAND...`: pull one enclave, run COMMAND with the ROS security
 * variables pointing at it, and keep watching the bundle while it runs:
 *   - enclave revoked, unbound or expired, or device refused: stop COMMAND (SIGTERM, SIGKILL after the grace
 *     period), purge, exit 3;
 *   - enclave changed (rotated, new CRL, new permissions...): the new files are swapped in, the log says which; COMMAND is restarted with --restart-on-change, otherwise
 *     it keeps what it loaded (DDS reads the files once) and the change is logged;
 *   - COMMAND exits: purge, exit with its code (128+N if it died of signal N).
 * COMMAND runs in a process group (and session) of its own: every stop, and every signal the agent forwards,
 * goes to the whole group, so processes COMMAND started (`sh -c 'worker & wait'`) hold no keys after it.
 * When the agent ends for any reason it can handle (COMMAND exited, stop, crash in the agent), whatever is
 * left of the group gets SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MAX_TIMER_MS, sleep } from './backoff.js';
import { describeFileChanges, diffFiles, enclaveId, type HeldEnclave, type ValidBundle } from './bundle.js';
import { AgentError, EXIT_FAILURE, EXIT_REFUSED } from './errors.js';
import { IdentityKeeper } from './identity.js';
import { lstatOrNull } from './fsutil.js';
import { errorMessage, type Logger } from './log.js';
import { isAlive } from './lock.js';
import { checkRuntimeDir } from './runtime-dir.js';
import { liveEnclaves, openSession, type Session, type SessionOptions } from './session.js';
import { watchBundles } from './watch.js';
import { RuntimeWriter } from './writer.js';

export interface ExecOptions extends SessionOptions {
  keystore: string;
  path: string;
  command: string[];
  restartOnChange: boolean;
  graceMs: number;
  splayMs: number;
  pollWaitS: number;
  /** The runtime folder was made for this invocation (default): remove the folder itself at the end. */
  privateRuntimeDir: boolean;
}

/**
 * Default runtime folder of `exec`: private to this invocation, on a RAM file system the user can write:
 * `$XDG_RUNTIME_DIR/enclave-agent/exec-<pid>`, else `/dev/shm/enclave-agent-<uid>/exec-<pid>`.
 * Folders of earlier invocations whose process is gone are purged.
 */
export function defaultExecRuntimeDir(log: Logger): string {
  const xdg = process.env.XDG_RUNTIME_DIR;
  const base = xdg && xdg.startsWith('/') ? join(xdg, 'enclave-agent') : `/dev/shm/enclave-agent-${process.getuid?.() ?? 0}`;
  const st = lstatOrNull(base);
  if (st) {
    checkRuntimeDir(base, st);
    for (const name of fs.readdirSync(base)) {
      const m = /^exec-(\d+)$/.exec(name);
      if (!m || Number(m[1]) === process.pid || isAlive(Number(m[1]))) continue;
      const writer = new RuntimeWriter(join(base, name));
      try {
        writer.purge();
        writer.close();
        fs.rmdirSync(join(base, name));
        log.debug(`removed ${join(base, name)} left by a crashed exec`);
      } catch (err) {
        writer.close();
        log.debug(`could not remove ${join(base, name)}: ${errorMessage(err)}`);
      }
    }
  }
  return join(base, `exec-${process.pid}`);
}

/**
 * Whether a process group still has a member that has not exited. Exited members whose parent is gone wait
 * for init to reap them (zombies); they count as gone. Without /proc, any member counts.
 */
function groupHasLiveMembers(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return true;
  }
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields 3 (state), 4, 5 (pgrp)
      if (Number(pgrp) === pgid && state !== 'Z') return true;
    } catch {
      // gone meanwhile
    }
  }
  return false;
}

export class Exec {
  private readonly abort = new AbortController();
  private session: Session | undefined;
  private child: ChildProcess | undefined;
  /** Process groups of COMMANDs started (their leader's pid) that may still have members. */
  private readonly groups = new Set<number>();
  private held: HeldEnclave | undefined;
  private restarting = false;
  private ending: number | undefined;
  private finished = false;
  private tornDown = false;
  /** When COMMAND's group was asked to stop (SIGTERM): the rest of the group gets until then + grace. */
  private stopDeadline: number | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Key and certificate of a per-robot enclave (identity.ts). */
  private identities: IdentityKeeper | undefined;
  private identityTimer: NodeJS.Timeout | undefined;
  /** Bundles and identity retries are handled one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();
  private resolveDone!: (code: number) => void;
  private readonly done = new Promise<number>((r) => (this.resolveDone = r));

  constructor(
    private readonly opts: ExecOptions,
    private readonly log: Logger,
  ) {}

  private get name(): string {
    return `${this.opts.keystore}:${this.opts.path}`;
  }

  async run(): Promise<number> {
    const s = openSession(this.opts, this.log);
    this.session = s;
    this.identities = new IdentityKeeper(s.client, this.log, { baseMs: this.opts.backoffBaseMs, maxMs: this.opts.backoffMaxMs });
    if (this.ending !== undefined) {
      this.finish(this.ending);
      return this.done;
    }
    if (this.opts.splayMs > 0) await sleep(Math.random() * this.opts.splayMs, this.abort.signal);
    if (this.ending !== undefined) return this.done;
    watchBundles({
      client: s.client,
      log: this.log,
      signal: this.abort.signal,
      pollWaitS: this.opts.pollWaitS,
      backoff: s.backoff,
      onBundle: (bundle) => {
        const receivedAt = performance.now();
        return this.serially(() => this.onBundle(bundle, receivedAt));
      },
    }).then(
      () => undefined,
      (err: unknown) => {
        this.log.error(errorMessage(err));
        this.end(err instanceof AgentError ? err.exitCode : EXIT_FAILURE);
      },
    );
    return this.done;
  }

  /**
   * A signal the agent received: forwarded to COMMAND's process group, or ends the agent when COMMAND is not
   * running. COMMAND has a session of its own, so a terminal's ^C reaches only the agent: it is forwarded here.
   */
  signal(sig: NodeJS.Signals): void {
    const terminating = sig === 'SIGHUP' || sig === 'SIGTERM' || sig === 'SIGINT' || sig === 'SIGQUIT';
    if (terminating) this.restarting = false; // being stopped: do not start COMMAND again after a rotation
    const child = this.child;
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      if (terminating) this.stopDeadline ??= Date.now() + this.opts.graceMs;
      this.signalGroup(child.pid, sig);
      return;
    }
    if (terminating) this.end(128 + (constants.signals[sig] ?? 15));
  }

  /** Sends `sig` to the process group led by `pgid` (COMMAND and what it started). */
  private signalGroup(pgid: number, sig: NodeJS.Signals): void {
    try {
      process.kill(-pgid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') this.groups.delete(pgid); // nobody left in it
      else this.log.warn(`cannot send ${sig} to process group ${pgid}: ${errorMessage(err)}`);
    }
  }

  /** SIGKILL to every group COMMAND ever had that may still have members: nothing started by it outlives the agent. */
  killGroups(): void {
    for (const pgid of [...this.groups]) {
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // already empty
      }
      this.groups.delete(pgid);
    }
  }

  private serially(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * A per-robot enclave: its identity taken back by the server ends the session like a revocation (COMMAND
   * stopped, files purged, exit 3; a restart by systemd makes a new key). Without a certificate yet, one is
   * asked for; while the server cannot issue it (rate limit, unreachable) COMMAND does not start and the
   * request is repeated when allowed.
   */
  private async withIdentity(found: HeldEnclave[], bundle: ValidBundle, receivedAt: number): Promise<{ live: HeldEnclave | undefined; waiting: boolean }> {
    const s = this.session!;
    const keeper = this.identities!;
    const live = liveEnclaves(found, s.client.clockSkewMs, this.log);
    if (live[0]?.identity !== 'per-robot') return { live: live[0], waiting: false };
    if (keeper.takenBack(live, receivedAt).length > 0) {
      this.log.warn(`identity for ${this.name}${this.held?.identitySerial ? ` (serial ${this.held.identitySerial})` : ''} was revoked: stopping ${this.opts.command[0]}`);
      return { live: undefined, waiting: false };
    }
    const { ready, waiting, renewals } = await keeper.complete(live, this.abort.signal);
    clearTimeout(this.identityTimer);
    const next = [...waiting.map((w) => w.retryAtMs), ...renewals];
    if (next.length > 0 && this.ending === undefined) {
      const delay = Math.min(Math.max(Math.min(...next) - Date.now(), 0), MAX_TIMER_MS);
      this.identityTimer = setTimeout(() => {
        this.serially(() => this.onBundle(bundle, receivedAt)).catch((err: unknown) => {
          this.log.error(errorMessage(err));
          this.end(err instanceof AgentError ? err.exitCode : EXIT_FAILURE);
        });
      }, delay);
    }
    return { live: ready[0], waiting: waiting.length > 0 };
  }

  private async onBundle(bundle: ValidBundle, receivedAt: number): Promise<void> {
    const s = this.session!;
    if (this.ending !== undefined) return;
    const found = bundle.enclaves.filter((e) => e.keystore === this.opts.keystore && e.path === this.opts.path);
    const { live, waiting } = await this.withIdentity(found, bundle, receivedAt);
    if (this.ending !== undefined || this.abort.signal.aborted) return;
    if (!this.held) {
      if (found.length === 0) throw new AgentError(`enclave ${this.name} is not bound to robot ${s.enrollment.robot}`, EXIT_REFUSED);
      if (waiting) return; // asked again when the server allows (withIdentity armed the timer)
      if (!live) throw new AgentError(`enclave ${this.name} has expired`, EXIT_REFUSED);
      s.writer.apply([live]);
      this.held = live;
      this.scheduleExpiry();
      this.start();
      return;
    }
    if (!live) {
      this.log.warn(`enclave ${this.name} was ${found.length ? 'expired or its identity revoked' : 'revoked or unbound'}: stopping ${this.opts.command[0]}`);
      this.end(EXIT_REFUSED);
      return;
    }
    const files = diffFiles(this.held.files, live.files);
    if (files.added.length + files.changed.length + files.removed.length === 0) return;
    s.writer.apply([live]);
    this.held = live;
    this.scheduleExpiry();
    const what = `enclave ${this.name} updated: ${describeFileChanges(files)}`;
    if (this.opts.restartOnChange) {
      this.log.info(`${what}: restarting ${this.opts.command[0]} with the new files`);
      this.restart();
    } else {
      this.log.info(
        `${what}: new files in place; ${this.opts.command[0]} keeps the ones it loaded until it restarts ` +
          '(use --restart-on-change to restart it)',
      );
    }
  }

  private start(): void {
    const s = this.session!;
    const [cmd, ...args] = this.opts.command;
    const env = {
      ...process.env,
      ROS_SECURITY_KEYSTORE: join(s.runtimeDir, this.opts.keystore),
      ROS_SECURITY_ENABLE: 'true',
      ROS_SECURITY_STRATEGY: 'Enforce',
      ROS_SECURITY_ENCLAVE_OVERRIDE: this.opts.path,
    };
    // detached: COMMAND leads a new process group (and session), so the whole group can be signalled.
    const child = spawn(cmd!, args, { stdio: 'inherit', env, detached: true });
    this.child = child;
    if (child.pid !== undefined) this.groups.add(child.pid);
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return; // a failed kill(): the exit event follows
      this.child = undefined;
      this.log.error(`cannot run ${cmd}: ${err.code === 'ENOENT' ? 'command not found' : err.message}`);
      this.restarting = false;
      this.end(err.code === 'ENOENT' ? 127 : 126);
    });
    child.once('exit', (code, signal) => this.onChildExit(code, signal));
    this.log.debug(`started ${cmd} (pid ${child.pid}) with enclave ${this.name}`);
  }

  private onChildExit(code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(this.killTimer);
    const pgid = this.child?.pid;
    this.child = undefined;
    const status = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
    if (pgid !== undefined && this.stopDeadline !== undefined) this.drainGroup(pgid, () => this.afterExit(pgid, code, signal, status));
    else this.afterExit(pgid, code, signal, status);
  }

  /**
   * COMMAND itself exited after its group was asked to stop: give the rest of the group what is left of the
   * grace period, then SIGKILL whatever remains.
   */
  private drainGroup(pgid: number, then: () => void): void {
    const tick = (): void => {
      if (!groupHasLiveMembers(pgid)) {
        this.groups.delete(pgid);
      } else if (Date.now() < this.stopDeadline!) {
        this.killTimer = setTimeout(tick, 50);
        return;
      } else {
        this.log.warn(`processes started by ${this.opts.command[0]} did not stop within ${this.opts.graceMs / 1000} s: killing them`);
        this.signalGroup(pgid, 'SIGKILL');
      }
      then();
    };
    tick();
  }

  private afterExit(pgid: number | undefined, code: number | null, signal: NodeJS.Signals | null, status: number): void {
    this.stopDeadline = undefined;
    if (this.ending !== undefined) {
      this.finish(this.ending);
    } else if (this.restarting) {
      this.restarting = false;
      // What the old COMMAND left of its group still holds the replaced files: it goes before the new one starts.
      if (pgid !== undefined) this.signalGroup(pgid, 'SIGKILL');
      this.start();
    } else {
      this.log.debug(`${this.opts.command[0]} exited with ${signal ?? code}`);
      this.ending = status;
      this.finish(status);
    }
  }

  /** SIGTERM to COMMAND's whole process group, SIGKILL to the group after the grace period. */
  private stopChild(): void {
    const pgid = this.child?.pid;
    if (pgid === undefined) return;
    this.stopDeadline ??= Date.now() + this.opts.graceMs;
    this.signalGroup(pgid, 'SIGTERM');
    clearTimeout(this.killTimer);
    this.killTimer = setTimeout(() => {
      this.log.warn(`${this.opts.command[0]} did not stop within ${this.opts.graceMs / 1000} s: killing it`);
      this.signalGroup(pgid, 'SIGKILL');
    }, this.opts.graceMs);
  }

  private restart(): void {
    if (!this.child) {
      this.start();
      return;
    }
    this.restarting = true;
    this.stopChild();
  }

  /** Ends the session with `code`: stop COMMAND if it runs (then finish when it exits), else finish now. */
  private end(code: number): void {
    if (this.ending !== undefined) return;
    this.ending = code;
    this.abort.abort();
    clearTimeout(this.expiryTimer);
    clearTimeout(this.identityTimer);
    if (this.child) this.stopChild();
    else if (this.session) this.finish(code);
  }

  private finish(code: number): void {
    if (this.finished) return;
    this.finished = true;
    this.teardown();
    this.resolveDone(code);
  }

  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    if (!this.held) return;
    const delay = Math.min(Math.max(this.held.notAfterMs - Date.now(), 0), MAX_TIMER_MS);
    this.expiryTimer = setTimeout(() => {
      if (this.held && this.held.notAfterMs <= Date.now()) {
        this.log.warn(`enclave ${enclaveId(this.held)} expired at ${this.held.notAfter}: stopping ${this.opts.command[0]}`);
        this.end(EXIT_REFUSED);
      } else {
        this.scheduleExpiry();
      }
    }, delay);
  }

  /**
   * Kills what is left of COMMAND's process group, purges the enclave (and the private runtime folder) and
   * releases the lock. Guarded, idempotent: also used on 'exit' (normal exit, or after an uncaught exception).
   */
  teardown(): void {
    this.abort.abort();
    clearTimeout(this.expiryTimer);
    clearTimeout(this.identityTimer);
    clearTimeout(this.killTimer);
    this.killGroups();
    const s = this.session;
    if (!s || this.tornDown) return;
    this.tornDown = true;
    try {
      s.writer.purge();
      s.writer.close();
      if (this.opts.privateRuntimeDir) fs.rmdirSync(resolve(s.runtimeDir));
    } catch (err) {
      try {
        s.writer.close();
      } catch {
        // the error above is the one to report
      }
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.error(`purge failed: ${errorMessage(err)}`);
    }
    try {
      s.client.close();
    } catch {
      // already closed
    }
  }
}
