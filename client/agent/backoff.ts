/** The smallest --backoff-base and --backoff-max (main.ts refuses smaller values): no retry storm. */
export const MIN_BACKOFF_BASE_MS = 100;
export const MIN_BACKOFF_MAX_MS = 1000;

/**
 * Exponential backoff with full jitter: the n-th wait is uniform in [0, min(cap, base * 2^n)]. The base is
 * at least MIN_BACKOFF_BASE_MS and the cap at least the base.
 */
export class Backoff {
  private attempt = 0;
  private readonly baseMs: number;
  private readonly capMs: number;

  constructor(
    baseMs: number,
    capMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.baseMs = Math.max(Number.isFinite(baseMs) ? baseMs : 0, MIN_BACKOFF_BASE_MS);
    this.capMs = Math.max(Number.isFinite(capMs) ? capMs : 0, this.baseMs);
  }

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(this.random() * ceiling);
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
