/**
 * Retry policy of the pull loop. A pure function (`retryDelay`) decides each wait from the attempt number,
 * what went wrong and a random source, so it can be tested without clocks; `Backoff` keeps the attempt count.
 *
 * - Server unreachable (connection refused or reset, timeouts, DNS, 502/503/504): exponential back-off with
 *   full jitter, capped at UNREACHABLE_CAP_MS (30 s) whatever --backoff-max says. The server is usually
 *   restarting; a robot must not come back minutes after it.
 * - Other failures (500, a refused bundle, TLS trouble, ...): the same, capped at --backoff-max (300 s):
 *   asking again soon would not help and would load a struggling server.
 * - A `Retry-After` (429/503) replaces the computed wait: the server knows when it can take us. It is bounded
 *   to RETRY_AFTER_MAX_MS and spread by up to a fifth (at least 1 s, at most 10 s) so a fleet told the same
 *   time does not return at the same instant. The agent never comes back earlier than asked.
 */
import { HttpStatusError, NetworkError } from '../common/http.js';

/** The smallest --backoff-base and --backoff-max (main.ts refuses smaller values): no retry storm. */
export const MIN_BACKOFF_BASE_MS = 100;
export const MIN_BACKOFF_MAX_MS = 1000;
/** The longest wait while the server is unreachable. */
export const UNREACHABLE_CAP_MS = 30_000;
/** The longest `Retry-After` honoured (a larger one is taken as this). */
export const RETRY_AFTER_MAX_MS = 300_000;

export interface Trouble {
  kind: 'unreachable' | 'failing';
  /** What the server's Retry-After asked for, in ms (not yet bounded). */
  retryAfterMs?: number;
}

export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

/** Network failures that mean "the server is not there right now" (as opposed to TLS or protocol trouble). */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'EHOSTDOWN', 'ENETUNREACH',
  'ENETDOWN', 'EAI_AGAIN', 'ENOTFOUND',
]);
const UNREACHABLE_STATUS = new Set([502, 503, 504]);

/** Sorts an error of the pull loop into the kind of trouble that decides the wait. */
export function classifyTrouble(err: unknown): Trouble {
  if (err instanceof NetworkError) return { kind: err.code === undefined || UNREACHABLE_CODES.has(err.code) ? 'unreachable' : 'failing' };
  if (err instanceof HttpStatusError) {
    const kind = UNREACHABLE_STATUS.has(err.status) ? 'unreachable' : 'failing';
    const honour = err.status === 429 || err.status === 503;
    return honour && err.retryAfterMs !== undefined ? { kind, retryAfterMs: err.retryAfterMs } : { kind };
  }
  return { kind: 'failing' };
}

/**
 * The wait before retry number `attempt` (0 for the first). Pure: `random` returns a number in [0, 1).
 */
export function retryDelay(policy: BackoffPolicy, attempt: number, trouble: Trouble, random: () => number): number {
  if (trouble.retryAfterMs !== undefined && Number.isFinite(trouble.retryAfterMs)) {
    const asked = Math.min(Math.max(trouble.retryAfterMs, 0), RETRY_AFTER_MAX_MS);
    const spread = Math.min(Math.max(asked / 5, 1000), 10_000);
    return Math.floor(asked + random() * spread);
  }
  const baseMs = Math.max(Number.isFinite(policy.baseMs) ? policy.baseMs : 0, MIN_BACKOFF_BASE_MS);
  let capMs = Math.max(Number.isFinite(policy.capMs) ? policy.capMs : 0, baseMs);
  if (trouble.kind === 'unreachable') capMs = Math.min(capMs, Math.max(UNREACHABLE_CAP_MS, baseMs));
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}

/** Counts attempts for `retryDelay`; `reset()` after a good exchange. */
export class Backoff {
  private attempt = 0;
  private readonly policy: BackoffPolicy;

  constructor(
    baseMs: number,
    capMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.policy = { baseMs, capMs };
  }

  next(trouble: Trouble = { kind: 'failing' }): number {
    return retryDelay(this.policy, this.attempt++, trouble, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Waits `ms`, or less if `signal` aborts first (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** setTimeout's largest delay (about 24.8 days); longer waits are re-armed when they fire. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
