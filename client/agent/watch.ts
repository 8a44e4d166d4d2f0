/**
 * The pull loop shared by `run` and `exec`: fetch the bundle, then long-poll for changes. Network trouble and
 * server errors are retried with exponential backoff and full jitter; a refused device (RefusedError) and
 * anything `onBundle` throws end the loop. A bundle that fails validation is refused whole and retried.
 */
import { Backoff, sleep } from './backoff.js';
import { InvalidBundle, parseBundle, type ValidBundle } from './bundle.js';
import { RefusedError } from './errors.js';
import { errorMessage, type Logger } from './log.js';
import type { RobotClient } from './robot-client.js';

/** If a server answers a long poll with 304 at once, wait at least this long before asking again. */
const MIN_POLL_INTERVAL_MS = 500;

export interface WatchOptions {
  client: RobotClient;
  log: Logger;
  signal: AbortSignal;
  pollWaitS: number;
  backoff: Backoff;
  /** A new bundle (revision changed). Throwing ends the loop with that error. */
  onBundle(bundle: ValidBundle): Promise<void> | void;
  /** Any good exchange with the server; `changed` is false for a 304 (nothing new). */
  onContact?(changed: boolean): Promise<void> | void;
  /** The server could not be reached or answered with an error; the loop retries after `delayMs`. */
  onTrouble?(message: string, delayMs: number): void;
}

export async function watchBundles(opts: WatchOptions): Promise<void> {
  const { client, log, signal, backoff } = opts;
  let etag: string | undefined;
  const trouble = async (message: string, level: 'warn' | 'error'): Promise<void> => {
    const delay = backoff.next();
    log[level](`${message}; retrying in ${(delay / 1000).toFixed(1)} s`);
    opts.onTrouble?.(message, delay);
    await sleep(delay, signal);
  };
  while (!signal.aborted) {
    const started = Date.now();
    let fetched;
    try {
      fetched = await client.fetchBundle({ etag, waitS: opts.pollWaitS, signal });
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof RefusedError) throw err;
      await trouble(`server unreachable or failing: ${errorMessage(err)}`, 'warn');
      continue;
    }
    if (!fetched.changed) {
      backoff.reset();
      await opts.onContact?.(false);
      const elapsed = Date.now() - started;
      if (elapsed < MIN_POLL_INTERVAL_MS) await sleep(MIN_POLL_INTERVAL_MS - elapsed, signal);
      continue;
    }
    let bundle: ValidBundle;
    try {
      bundle = parseBundle(fetched.body);
    } catch (err) {
      if (!(err instanceof InvalidBundle)) throw err;
      await trouble(err.message, 'error');
      continue;
    }
    backoff.reset();
    await opts.onContact?.(true);
    if (signal.aborted) return;
    await opts.onBundle(bundle);
    etag = fetched.etag ?? `"${bundle.revision}"`;
  }
}
