/**
 * `enclave-agent run`: keeps the runtime folder equal to this robot's bundle.
 *
 * Start: purge what a crash left, wait a random splay, pull, write, then READY=1 (only when at least one
 * enclave is bound and all of them are in place: fail closed). Then long-poll; every change is written
 * atomically and reported. While the server is unreachable the held enclaves stay until they expire.
 * `stop()` (SIGTERM/SIGINT) purges everything; a refused device purges and fails.
 */
import { randomInt } from 'node:crypto';
import { MAX_TIMER_MS, sleep } from './backoff.js';
import { describeFileChanges, diffEnclaves, enclaveId, type HeldEnclave, type ValidBundle } from './bundle.js';
import { AgentError, EXIT_FAILURE, EXIT_OK } from './errors.js';
import { errorMessage, type Logger } from './log.js';
import { sdNotify } from './notify.js';
import { liveEnclaves, openSession, type Session, type SessionOptions } from './session.js';
import { writeStatus, type AgentStatus } from './status.js';
import { agentVersion } from './version.js';
import { watchBundles } from './watch.js';
import type { Revision } from '../common/robot-wire.js';

export interface RunOptions extends SessionOptions {
  splayMs: number;
  pollWaitS: number;
}

const SKEW_WARN_MS = 60_000;

export class Agent {
  private readonly abort = new AbortController();
  private session: Session | undefined;
  private stopped = false;
  private fatal: unknown;
  private held: HeldEnclave[] = [];
  private revision: Revision | null = null;
  private ready = false;
  private lastContact: string | null = null;
  private lastError: string | null = null;
  private reportPending = false;
  private skewWarned = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  private tornDown = false;
  /** The status last written, without its time: an unchanged status is not written again. */
  private lastStatus: string | undefined;

  constructor(
    private readonly opts: RunOptions,
    private readonly log: Logger,
  ) {}

  /** Runs until stopped (resolves 0) or until a fatal error (purges, resolves its exit code). */
  async run(): Promise<number> {
    const s = openSession(this.opts, this.log); // errors here happen before anything is written
    this.session = s;
    if (this.stopped) return EXIT_OK;
    this.saveStatus();
    sdNotify({ STATUS: `contacting ${s.enrollment.server}` }, this.log);
    this.log.info(`robot ${s.enrollment.robot}: pulling enclaves from ${s.enrollment.server} into ${s.runtimeDir}`);
    if (this.opts.splayMs > 0) await sleep(randomInt(0, Math.ceil(this.opts.splayMs) + 1), this.abort.signal);
    try {
      await watchBundles({
        client: s.client,
        log: this.log,
        signal: this.abort.signal,
        pollWaitS: this.opts.pollWaitS,
        backoff: s.backoff,
        onBundle: (bundle) => this.onBundle(bundle),
        onContact: (changed) => this.onContact(changed),
        onTrouble: (message) => this.onTrouble(message),
      });
    } catch (err) {
      this.fatal ??= err;
    }
    if (this.fatal !== undefined && !this.stopped) {
      this.log.error(errorMessage(this.fatal));
      this.teardown();
      return this.fatal instanceof AgentError ? this.fatal.exitCode : EXIT_FAILURE;
    }
    this.teardown();
    return EXIT_OK;
  }

  /** SIGTERM/SIGINT: purge at once and let run() return 0. Idempotent. */
  stop(reason: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.log.info(`${reason}: removing enclaves and stopping`);
    sdNotify({ STOPPING: '1', STATUS: 'stopping' }, this.log);
    this.teardown();
  }

  /** Tears down in reverse order of start-up; every step guarded; safe to call again (e.g. on 'exit'). */
  teardown(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.abort.abort();
    const s = this.session;
    if (!s || this.tornDown) return;
    this.tornDown = true;
    try {
      s.writer.purge();
    } catch (err) {
      this.log.error(`purge failed: ${errorMessage(err)}`);
    }
    try {
      s.writer.close(); // releases the lock
    } catch (err) {
      this.log.error(`releasing the runtime folder failed: ${errorMessage(err)}`);
    }
    try {
      s.client.close();
    } catch {
      // nothing left to close
    }
  }

  private fail(err: unknown): void {
    this.fatal ??= err;
    this.abort.abort();
  }

  private async onBundle(bundle: ValidBundle): Promise<void> {
    const s = this.session!;
    // The same revision again is no change: no rewrite, no report, no notification (watch.ts filters it too).
    if (this.revision !== null && String(this.revision) === String(bundle.revision)) return;
    const live = liveEnclaves(bundle.enclaves, s.client.clockSkewMs, this.log);
    const changes = diffEnclaves(this.held, live);
    s.writer.apply(live); // throws AgentError on a foreign symlink etc.: fatal
    this.held = live;
    this.revision = bundle.revision;
    for (const id of changes.added) this.log.info(`enclave ${id} written`);
    for (const { id, files } of changes.updated) this.log.info(`enclave ${id} updated: ${describeFileChanges(files)}`);
    for (const id of changes.removed) this.log.info(`enclave ${id} removed (revoked or unbound)`);
    this.scheduleExpiry();
    this.announce();
    this.saveStatus();
    this.reportPending = true;
    await this.sendReport();
  }

  private async onContact(changed: boolean): Promise<void> {
    const s = this.session!;
    this.lastContact = new Date().toISOString();
    this.lastError = null;
    if (!this.skewWarned && Math.abs(s.client.clockSkewMs) > SKEW_WARN_MS) {
      this.skewWarned = true;
      this.log.warn(`this clock differs from the server's by ${Math.round(s.client.clockSkewMs / 1000)} s: certificates may look not yet valid or expired`);
    }
    if (!changed) {
      this.saveStatus();
      if (this.reportPending) await this.sendReport();
    }
  }

  private onTrouble(message: string): void {
    this.lastError = message;
    this.saveStatus();
    sdNotify({ STATUS: `${this.summary()}; server unreachable` }, this.log);
  }

  private summary(): string {
    const keystores = new Set(this.held.map((e) => e.keystore)).size;
    if (this.held.length === 0) return this.revision === null ? 'no enclaves yet' : 'waiting: no enclave bound to this robot';
    const next = Math.min(...this.held.map((e) => e.notAfterMs));
    return `holding ${this.held.length} enclave(s) in ${keystores} keystore(s), revision ${this.revision}, next expiry ${new Date(next).toISOString()}`;
  }

  /** READY=1 once, when every bound enclave is in place; STATUS= on every change. */
  private announce(): void {
    const status = this.summary();
    if (!this.ready && this.held.length > 0) {
      this.ready = true;
      sdNotify({ READY: '1', STATUS: status }, this.log);
      this.log.info(`ready: ${status}`);
      this.log.debug(`enclaves in place ${Math.round(performance.now())} ms after process start`);
    } else {
      sdNotify({ STATUS: status }, this.log);
      if (this.held.length === 0) this.log.warn('no enclave is bound to this robot: waiting for a binding');
    }
  }

  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    if (this.held.length === 0 || this.stopped) return;
    const next = Math.min(...this.held.map((e) => e.notAfterMs));
    this.expiryTimer = setTimeout(() => this.expire(), Math.min(Math.max(next - Date.now(), 0), MAX_TIMER_MS));
  }

  /** Removes enclaves whose certificate expired (the server may be out of reach and not tell us). */
  private expire(): void {
    const now = Date.now();
    const remaining = this.held.filter((e) => e.notAfterMs > now);
    if (remaining.length !== this.held.length) {
      try {
        this.session!.writer.apply(remaining);
      } catch (err) {
        this.fail(err);
        return;
      }
      for (const e of this.held) if (e.notAfterMs <= now) this.log.warn(`enclave ${enclaveId(e)} expired at ${e.notAfter}: removed`);
      this.held = remaining;
      this.saveStatus();
      sdNotify({ STATUS: this.summary() }, this.log);
      this.reportPending = true;
      void this.sendReport();
    }
    this.scheduleExpiry();
  }

  private async sendReport(): Promise<void> {
    const s = this.session!;
    try {
      await s.client.report(
        {
          revision: this.revision === null ? null : String(this.revision),
          filesystem: s.filesystem,
          clockSkewMs: s.client.clockSkewMs,
          agentVersion: agentVersion(),
          enclaves: this.held.map((e) => ({ keystore: e.keystore, path: e.path, notAfter: e.notAfter })),
        },
        this.abort.signal,
      );
      this.reportPending = false;
    } catch (err) {
      if (!this.abort.signal.aborted) this.log.warn(`report not sent (will retry): ${errorMessage(err)}`);
    }
  }

  /**
   * Writes the status file when what it says changed. A retry loop against an unreachable server then writes
   * it once, not on every attempt: the folder an operator (or a test) lists is not churned by temporary
   * files, and `updatedAt` says when the status last changed.
   */
  private saveStatus(): void {
    const s = this.session;
    if (!s || this.stopped || this.tornDown) return;
    const status: Omit<AgentStatus, 'updatedAt'> = {
      pid: process.pid,
      robot: s.enrollment.robot,
      server: s.enrollment.server,
      revision: this.revision,
      filesystem: s.filesystem,
      ready: this.ready,
      lastContact: this.lastContact,
      lastError: this.lastError,
      clockSkewMs: s.client.clockSkewMs,
      enclaves: this.held.map((e) => ({ keystore: e.keystore, path: e.path, notAfter: e.notAfter })),
    };
    const key = JSON.stringify(status);
    if (key === this.lastStatus) return;
    try {
      writeStatus(s.writer, { ...status, updatedAt: new Date().toISOString() });
      this.lastStatus = key;
    } catch (err) {
      this.log.debug(`status file not written: ${errorMessage(err)}`);
    }
  }
}
