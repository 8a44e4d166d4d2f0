import { TooManyRequests } from '../errors.js';

export interface LoginThrottleOptions {
  /** Wrong passwords a (user, address) pair may send before each next attempt has to wait. */
  freeFailures: number;
  /** The first wait; it doubles with every further failure, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A pair's failures are forgotten this long after its last one. */
  forgetAfterMs: number;
  /** Login attempts one address may start per second on average (any user, right or wrong)... */
  perAddressRate: number;
  /** ...and in a burst. */
  perAddressBurst: number;
}

export const DEFAULT_LOGIN_THROTTLE: LoginThrottleOptions = {
  freeFailures: 5,
  baseDelayMs: 1000,
  maxDelayMs: 60_000,
  forgetAfterMs: 15 * 60_000,
  perAddressRate: 5,
  perAddressBurst: 20,
};

interface PairState {
  failures: number;
  notBefore: number;
  lastFailure: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Slows password guessing without letting anyone lock a user out. Failures are keyed on (user name as typed,
 * client address): after a few, each next attempt of that pair has to wait, the wait doubling up to a minute,
 * so guessing one account from one address is slow, while the same user from any other address is never
 * slowed by it (no global lock-out of an administrator). Each address also gets a token bucket of attempts,
 * refilled every fraction of a second, which bounds the scrypt work one flooding address can cause; a person
 * sharing that address waits at most a moment, never minutes. Answers are 429 with Retry-After.
 *
 * Attempts are charged before the (slow) hash and refunded on success, so concurrent guesses cannot slip past
 * the check. In memory: one server process holds the state.
 */
export class LoginThrottle {
  private readonly pairs = new Map<string, PairState>();
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly now: () => number = Date.now,
    private readonly opts: LoginThrottleOptions = DEFAULT_LOGIN_THROTTLE,
  ) {}

  /** Throws 429 when this attempt must wait; otherwise charges it as a failure until `succeed`. */
  begin(ip: string, user: string): void {
    const t = this.now();
    const bucket = this.refill(ip, t);
    if (bucket.tokens < 1) {
      throw new TooManyRequests('too many login attempts from this address, slow down', Math.ceil((1 - bucket.tokens) / this.opts.perAddressRate));
    }
    const key = pairKey(user, ip);
    const pair = this.pairs.get(key);
    if (pair && t - pair.lastFailure > this.opts.forgetAfterMs) this.pairs.delete(key);
    else if (pair && pair.notBefore > t) {
      throw new TooManyRequests('too many failed logins for this user from this address, try again later', Math.ceil((pair.notBefore - t) / 1000));
    }
    bucket.tokens -= 1;
    this.fail(key, t);
    if (this.pairs.size > 100_000) this.sweep(t);
  }

  /** The password was right: the pair starts over. */
  succeed(ip: string, user: string): void {
    this.pairs.delete(pairKey(user, ip));
  }

  private fail(key: string, t: number): void {
    const p = this.pairs.get(key) ?? { failures: 0, notBefore: 0, lastFailure: t };
    p.failures++;
    p.lastFailure = t;
    const over = p.failures - this.opts.freeFailures;
    if (over >= 0) p.notBefore = t + Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(over, 30));
    this.pairs.set(key, p);
  }

  private refill(ip: string, t: number): Bucket {
    const b = this.buckets.get(ip) ?? { tokens: this.opts.perAddressBurst, at: t };
    b.tokens = Math.min(this.opts.perAddressBurst, b.tokens + ((t - b.at) / 1000) * this.opts.perAddressRate);
    b.at = t;
    this.buckets.set(ip, b);
    return b;
  }

  private sweep(t: number): void {
    for (const [k, p] of this.pairs) if (t - p.lastFailure > this.opts.forgetAfterMs) this.pairs.delete(k);
    for (const [k, b] of this.buckets) if (b.tokens + ((t - b.at) / 1000) * this.opts.perAddressRate >= this.opts.perAddressBurst) this.buckets.delete(k);
  }
}

const pairKey = (user: string, ip: string) => `${user}\0${ip}`;

/**
 * Counts failed unauthenticated attempts (enrollments, robot logins) per client address in fixed windows.
 * It is consulted only after a credential failed: a valid token or assertion is never refused by it, so a
 * fleet behind one NAT address (or a TLS proxy) cannot be locked out by one attacker sharing it. Past the
 * limit, failures are answered 429 and no longer audited one by one, so they cannot grow the log without bound.
 */
export class FailureWindow {
  private readonly windows = new Map<string, { failures: number; resetAt: number }>();

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one failure; returns the seconds to wait when the address is over its limit, else 0. */
  fail(ip: string): number {
    const t = this.now();
    let w = this.windows.get(ip);
    if (!w || w.resetAt <= t) {
      w = { failures: 0, resetAt: t + this.windowMs };
      this.windows.set(ip, w);
    }
    w.failures++;
    if (this.windows.size > 100_000) for (const [k, v] of this.windows) if (v.resetAt <= t) this.windows.delete(k);
    return w.failures > this.max ? Math.ceil((w.resetAt - t) / 1000) : 0;
  }
}
