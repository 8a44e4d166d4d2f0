/**
 * The pull loop shared by `run` and `exec`: fetch the bundle, then long-poll for changes. Network trouble and
 * server errors are retried after the waits of backoff.ts (capped at 30 s while the server is unreachable,
 * `Retry-After` honoured); a refused device (RefusedError) and
 * anything `onBundle` throws end the loop. A bundle that fails validation is refused whole and retried.
 *
 * Whatever the server does, the loop never asks more often than once per `minIntervalMs`, and a bundle with
 * the revision already held is no change (a server or proxy that ignores If-None-Match and answers at once
 * costs one request per interval, not a rewrite, a report and a notification each time).
 */
import { performance } from 'node:perf_hooks';
import { classifyTrouble, type Backoff, sleep } from './backoff.js';
import { InvalidBundle, parseBundle, type ValidBundle } from './bundle.js';
import { RefusedError } from './errors.js';
import { errorMessage, type Logger } from './log.js';
import type { BundleFetch } from './robot-client.js';

/** The shortest time between the starts of two bundle requests. */
export const MIN_POLL_INTERVAL_MS = 500;

/** What the loop needs from the server client (RobotClient). */
export interface BundleSource {
  fetchBundle(opts: { etag?: string; waitS: number; signal?: AbortSignal }): Promise<BundleFetch>;
}

export interface WatchOptions {
  client: BundleSource;
  log: Logger;
  signal: AbortSignal;
  pollWaitS: number;
  backoff: Backoff;
  /** Shortest time between two requests (default MIN_POLL_INTERVAL_MS). */
  minIntervalMs?: number;
  /** A new bundle (revision changed). Throwing ends the loop with that error. */
  onBundle(bundle: ValidBundle): Promise<void> | void;
  /** Any good exchange with the server; `changed` is false when nothing is new (304, or the same revision). */
  onContact?(changed: boolean): Promise<void> | void;
  /** The server could not be reached or answered with an error; the loop retries after `delayMs`. */
  onTrouble?(message: string, delayMs: number): void;
}

export async function watchBundles(opts: WatchOptions): Promise<void> {
  const { client, log, signal, backoff } = opts;
  const minInterval = opts.minIntervalMs ?? MIN_POLL_INTERVAL_MS;
  let etag: string | undefined;
  /** Revision of the last bundle handed to onBundle. */
  let held: string | undefined;
  let lastStart = -Infinity;
  const trouble = async (message: string, level: 'warn' | 'error', err: unknown): Promise<void> => {
    const kind = classifyTrouble(err);
    const delay = backoff.next(kind);
    const asked = kind.retryAfterMs === undefined ? '' : ` (the server asked for ${Math.round(kind.retryAfterMs / 1000)} s)`;
    log[level](`${message}; retrying in ${(delay / 1000).toFixed(1)} s${asked}`);
    opts.onTrouble?.(message, delay);
    await sleep(delay, signal);
  };
  while (!signal.aborted) {
    const wait = lastStart + minInterval - performance.now();
    if (wait > 0) await sleep(wait, signal);
    if (signal.aborted) return;
    lastStart = performance.now();
    let fetched;
    try {
      fetched = await client.fetchBundle({ etag, waitS: opts.pollWaitS, signal });
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof RefusedError) throw err;
      // Ask afresh next time: whatever went wrong (also locally, before anything was sent) must not repeat
      // because of a stale If-None-Match. An unchanged answer is recognised by its revision.
      etag = undefined;
      await trouble(`server unreachable or failing: ${errorMessage(err)}`, 'warn', err);
      continue;
    }
    if (!fetched.changed) {
      backoff.reset();
      await opts.onContact?.(false);
      continue;
    }
    let bundle: ValidBundle;
    try {
      bundle = parseBundle(fetched.body);
    } catch (err) {
      if (!(err instanceof InvalidBundle)) throw err;
      await trouble(err.message, 'error', err);
      continue;
    }
    backoff.reset();
    const revision = String(bundle.revision);
    // Built from the checked revision only (letters and digits), never from a header the server sent.
    etag = `"${revision}"`;
    if (revision === held) {
      await opts.onContact?.(false);
      continue;
    }
    await opts.onContact?.(true);
    if (signal.aborted) return;
    await opts.onBundle(bundle);
    held = revision;
  }
}
