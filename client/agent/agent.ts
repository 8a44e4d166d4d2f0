/**
 * `enclave-agent run`: keeps the runtime folder equal to this robot's bundle.
 *
 * Start: purge what a crash left, wait a random splay, pull, write, then READY=1 (only when at least one
 * enclave is bound and all of them are in place: fail closed). Then long-poll; every change is written
 * atomically and reported. While the server is unreachable the held enclaves stay until they expire.
 * `stop()` (SIGTERM/SIGINT) purges everything; a refused device purges and fails.
 */
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { MAX_TIMER_MS, sleep } from './backoff.js';
import { describeFileChanges, diffEnclaves, enclaveId, type HeldEnclave, type ValidBundle } from './bundle.js';
import { AgentError, EXIT_FAILURE, EXIT_OK } from './errors.js';
import { IdentityKeeper } from './identity.js';
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
  /** Keys and certificates of per-robot enclaves (identity.ts). */
  private identities: IdentityKeeper | undefined;
  /** The last bundle and when it arrived (performance.now()): asked again for identities still waiting. */
  private lastBundle: { bundle: ValidBundle; receivedAt: number } | undefined;
  private identityTimer: NodeJS.Timeout | undefined;
  /** Bundles and identity retries are applied one at a time, in order. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly opts: RunOptions,
    private readonly log: Logger,
  ) {}

  /** Runs until stopped (resolves 0) or until a fatal error (purges, resolves its exit code). */
  async run(): Promise<number> {
    const s = openSession(this.opts, this.log); // errors here happen before anything is written
    this.session = s;
    this.identities = new IdentityKeeper(s.client, this.log, { baseMs: this.opts.backoffBaseMs, maxMs: this.opts.backoffMaxMs });
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
    clearTimeout(this.identityTimer);
    this.identityTimer = undefined;
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
    // The same revision again is no change: no rewrite, no report, no notification (watch.ts filters it too).
    if (this.revision !== null && String(this.revision) === String(bundle.revision)) return;
    const arrived = { bundle, receivedAt: performance.now() };
    this.lastBundle = arrived;
    await this.serially(() => this.reconcile(arrived.bundle, arrived.receivedAt));
  }

  private serially(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Makes the runtime folder hold `bundle`: per-robot enclaves whose identity the server took back are removed
   * first (their key is discarded), then every per-robot enclave without a certificate for this robot's key
   * gets one (new key, CSR), and the result is written. Enclaves still waiting for an identity are asked for
   * again later (rate limit, server unreachable) and stay out until then.
   */
  private async reconcile(bundle: ValidBundle, receivedAt: number): Promise<void> {
    const s = this.session!;
    const identities = this.identities!;
    if (this.abort.signal.aborted) return;
    const live = liveEnclaves(bundle.enclaves, s.client.clockSkewMs, this.log);
    const takenBack = identities.takenBack(live, receivedAt);
    if (takenBack.length > 0) {
      const gone = new Set(takenBack.map(enclaveId));
      const keep = this.held.filter((e) => !gone.has(enclaveId(e)));
      const had = new Map(this.held.map((e) => [enclaveId(e), e.identitySerial]));
      s.writer.apply(keep); // throws AgentError on a foreign symlink etc.: fatal
      this.held = keep;
      for (const id of gone) {
        const serial = had.get(id);
        this.log.warn(`identity for ${id}${serial ? ` (serial ${serial})` : ''} was revoked: enclave removed, key discarded; asking for a new identity with a new key`);
      }
    }
    const { ready, waiting, renewals } = await identities.complete(live, this.abort.signal);
    if (this.abort.signal.aborted) return;
    const changes = diffEnclaves(this.held, ready);
    s.writer.apply(ready); // throws AgentError on a foreign symlink etc.: fatal
    const changed = this.revision === null || String(this.revision) !== String(bundle.revision) || changes.added.length + changes.updated.length + changes.removed.length > 0;
    this.held = ready;
    this.revision = bundle.revision;
    for (const id of changes.added) this.log.info(`enclave ${id} written`);
    for (const { id, files } of changes.updated) this.log.info(`enclave ${id} updated: ${describeFileChanges(files)}`);
    for (const id of changes.removed) this.log.info(`enclave ${id} removed (revoked or unbound)`);
    this.scheduleIdentityRetry([...waiting.map((w) => w.retryAtMs), ...renewals]);
    if (!changed) return;
    this.scheduleExpiry();
    this.announce(waiting.length === 0);
    this.saveStatus();
    this.reportPending = true;
    // A server with a large fleet waiting asks for the report on the next contact (onContact sends it), out of
    // the fan-out that brought this bundle.
    if (!s.client.reportOnNextContact) await this.sendReport();
  }

  /**
   * Asks again for the identities still missing, or due for renewal, at the earliest time one of them may be
   * asked for.
   */
  private scheduleIdentityRetry(times: number[]): void {
    clearTimeout(this.identityTimer);
    this.identityTimer = undefined;
    if (times.length === 0 || this.stopped) return;
    const delay = Math.min(Math.max(Math.min(...times) - Date.now(), 0), MAX_TIMER_MS);
    this.identityTimer = setTimeout(() => {
      this.identityTimer = undefined;
      const last = this.lastBundle;
      if (!last || this.abort.signal.aborted) return;
      this.serially(() => this.reconcile(last.bundle, last.receivedAt)).catch((err: unknown) => this.fail(err));
    }, delay);
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

  /** READY=1 once, when every bound enclave is in place (`complete`); STATUS= on every change. */
  private announce(complete: boolean): void {
    const status = this.summary();
    if (!this.ready && this.held.length > 0 && complete) {
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
