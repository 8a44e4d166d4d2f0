import type { RequestHandler } from 'express';
import { ServiceUnavailable } from '../errors.js';

export interface OverloadOptions {
  /** Event-loop lag above which the server counts as saturated. 0 turns shedding off. */
  lagMs: number;
  /** How long it stays counted as saturated after the last late tick (so that it does not flap per request). */
  holdMs: number;
}

export const DEFAULT_OVERLOAD: OverloadOptions = { lagMs: 250, holdMs: 1000 };

const TICK_MS = 25;

/**
 * Measures how late a short repeating timer fires: when TLS handshakes, crypto and SQLite keep the one event
 * loop busy, every queued request waits at least that long. Two late ticks within `holdMs` mark the server
 * saturated until `holdMs` after the last one; a quiet tick does not clear it early.
 */
export class LoadMonitor {
  private expected: number;
  private lastLate = -Infinity;
  private worst = 0;
  private lateTicks = 0;
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: OverloadOptions = DEFAULT_OVERLOAD,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.expected = clock() + TICK_MS;
    if (opts.lagMs > 0) {
      this.timer = setInterval(() => this.tick(), TICK_MS);
      this.timer.unref();
    }
  }

  private tick(): void {
    const now = this.clock();
    const lag = now - this.expected;
    this.expected = now + TICK_MS;
    if (lag > this.opts.lagMs) {
      // A new episode starts from this tick; within one, the worst lag seen sets the back-off.
      if (now - this.lastLate >= this.opts.holdMs) {
        this.worst = 0;
        this.lateTicks = 0;
      }
      this.worst = Math.max(this.worst, lag);
      this.lateTicks++;
      this.lastLate = now;
    }
  }

  /** The worst recent lag in ms while saturated, else 0. */
  lag(): number {
    // One late tick is one long task that is over (an import, a big batch); saturation keeps ticks late.
    return this.lateTicks >= 2 && this.clock() - this.lastLate < this.opts.holdMs ? this.worst : 0;
  }

  close(): void {
    clearInterval(this.timer);
  }
}

/**
 * Seconds a shed client should wait: grows with how late the loop is, and is spread at random over a range as
 * wide again, so that ten thousand robots refused in the same second come back over many seconds.
 */
export function retryAfterSeconds(lagMs: number, random: () => number = Math.random): number {
  const base = Math.min(15, Math.max(1, Math.ceil(lagMs / 200)));
  return base + Math.floor(random() * (base + 1));
}

/**
 * Refuses new robot work (logins, enrollments, reports) with 503 + Retry-After while the server is
 * saturated, before any of its cost is paid: robots that already hold a token keep getting bundles and long
 * polls, admins and /health keep working, and the robots refused come back spread out instead of queueing for
 * a minute.
 */
export function shedWhenOverloaded(monitor: LoadMonitor): RequestHandler {
  return (req, _res, next) => {
    if (req.method !== 'POST' || !SHED.has(req.path)) return next();
    next(overloaded(monitor));
  };
}

/** The 503 to answer new robot work with while the server is saturated; undefined when it is not. */
export function overloaded(monitor: LoadMonitor): ServiceUnavailable | undefined {
  const lag = monitor.lag();
  if (lag === 0) return undefined;
  const wait = retryAfterSeconds(lag);
  return new ServiceUnavailable(`the server is busy; retry in ${wait} s`, wait);
}

const SHED = new Set(['/v1/auth/robot', '/v1/enroll', '/v1/robot/report']);
