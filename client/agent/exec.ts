/**
 * `enclave-agent exec --enclave KS:PATH -- COMMAND...`: pull one enclave, run COMMAND with the ROS security
 * variables pointing at it, and keep watching the bundle while it runs:
 *   - enclave revoked, unbound or expired, or device refused: stop COMMAND (SIGTERM, SIGKILL after the grace
 *     period), purge, exit 3;
 *   - enclave rotated: the new files are swapped in; COMMAND is restarted with --restart-on-change, otherwise
 *     it keeps what it loaded (DDS reads the files once) and the change is logged;
 *   - COMMAND exits: purge, exit with its code (128+N if it died of signal N).
 * Signals the agent receives are forwarded to COMMAND (see README.md for SIGINT on a terminal).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import { join, resolve } from 'node:path';
import { MAX_TIMER_MS, sleep } from './backoff.js';
import { enclaveDigest, enclaveId, type HeldEnclave, type ValidBundle } from './bundle.js';
import { AgentError, EXIT_FAILURE, EXIT_REFUSED } from './errors.js';
import { lstatOrNull } from './fsutil.js';
import { errorMessage, type Logger } from './log.js';
import { checkRuntimeDir } from './runtime-dir.js';
import { liveEnclaves, openSession, type Session, type SessionOptions } from './session.js';
import { isAlive } from './status.js';
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
      try {
        new RuntimeWriter(join(base, name)).purge();
        fs.rmdirSync(join(base, name));
        log.debug(`removed ${join(base, name)} left by a crashed exec`);
      } catch (err) {
        log.debug(`could not remove ${join(base, name)}: ${errorMessage(err)}`);
      }
    }
  }
  return join(base, `exec-${process.pid}`);
}

export class Exec {
  private readonly abort = new AbortController();
  private session: Session | undefined;
  private child: ChildProcess | undefined;
  private held: HeldEnclave | undefined;
  private restarting = false;
  private ending: number | undefined;
  private finished = false;
  private killTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
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
      onBundle: (bundle) => this.onBundle(bundle),
    }).then(
      () => undefined,
      (err: unknown) => {
        this.log.error(errorMessage(err));
        this.end(err instanceof AgentError ? err.exitCode : EXIT_FAILURE);
      },
    );
    return this.done;
  }

  /** A signal the agent received: forwarded to COMMAND, or ends the agent when COMMAND is not running. */
  signal(sig: NodeJS.Signals, fromTerminal: boolean): void {
    const terminating = sig === 'SIGHUP' || sig === 'SIGTERM' || sig === 'SIGINT' || sig === 'SIGQUIT';
    if (terminating) this.restarting = false; // being stopped: do not start COMMAND again after a rotation
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      // A terminal's ^C / ^\ already reached COMMAND (same foreground process group): don't send it twice.
      if (!fromTerminal) this.child.kill(sig);
      return;
    }
    if (terminating) this.end(128 + (constants.signals[sig] ?? 15));
  }

  private async onBundle(bundle: ValidBundle): Promise<void> {
    const s = this.session!;
    if (this.ending !== undefined) return;
    const found = bundle.enclaves.filter((e) => e.keystore === this.opts.keystore && e.path === this.opts.path);
    const live = liveEnclaves(found, s.client.clockSkewMs, this.log)[0];
    if (!this.held) {
      if (found.length === 0) throw new AgentError(`enclave ${this.name} is not bound to robot ${s.enrollment.robot}`, EXIT_REFUSED);
      if (!live) throw new AgentError(`enclave ${this.name} has expired`, EXIT_REFUSED);
      s.writer.apply([live]);
      this.held = live;
      this.scheduleExpiry();
      this.start();
      return;
    }
    if (!live) {
      this.log.warn(`enclave ${this.name} was ${found.length ? 'expired' : 'revoked or unbound'}: stopping ${this.opts.command[0]}`);
      this.end(EXIT_REFUSED);
      return;
    }
    if (enclaveDigest(live) === enclaveDigest(this.held)) return;
    s.writer.apply([live]);
    this.held = live;
    this.scheduleExpiry();
    if (this.opts.restartOnChange) {
      this.log.info(`enclave ${this.name} rotated: restarting ${this.opts.command[0]} with the new files`);
      this.restart();
    } else {
      this.log.info(
        `enclave ${this.name} rotated: new files in place; ${this.opts.command[0]} keeps the ones it loaded until it restarts ` +
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
    const child = spawn(cmd!, args, { stdio: 'inherit', env });
    this.child = child;
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
    this.child = undefined;
    const status = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
    if (this.ending !== undefined) {
      this.finish(this.ending);
    } else if (this.restarting) {
      this.restarting = false;
      this.start();
    } else {
      this.log.debug(`${this.opts.command[0]} exited with ${signal ?? code}`);
      this.ending = status;
      this.finish(status);
    }
  }

  private stopChild(): void {
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    clearTimeout(this.killTimer);
    this.killTimer = setTimeout(() => {
      this.log.warn(`${this.opts.command[0]} did not stop within ${this.opts.graceMs / 1000} s: killing it`);
      child.kill('SIGKILL');
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

  /** Purges the enclave (and the private runtime folder). Guarded, idempotent: also used on 'exit'. */
  teardown(): void {
    this.abort.abort();
    clearTimeout(this.expiryTimer);
    const s = this.session;
    if (!s) return;
    try {
      s.writer.purge();
      if (this.opts.privateRuntimeDir) fs.rmdirSync(resolve(s.runtimeDir));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.error(`purge failed: ${errorMessage(err)}`);
    }
    try {
      s.client.close();
    } catch {
      // already closed
    }
  }
}
