import type { Repos } from '../store/store.js';
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

/** Expired limiter rows mean nothing (ThrottleRepo.get skips them); every this many writes they are deleted. */
const SWEEP_EVERY = 1024;

/**
 * Slows password guessing without letting anyone lock a user out. Failures are keyed on (user name as typed,
 * client address): after a few, each next attempt of that pair has to wait, the wait doubling up to a minute,
 * so guessing one account from one address is slow, while the same user from any other address is never
 * slowed by it (no global lock-out of an administrator). Each address also gets a token bucket of attempts,
 * refilled every fraction of a second, which bounds the scrypt work one flooding address can cause; a person
 * sharing that address waits at most a moment, never minutes. Answers are 429 with Retry-After.
 *
 * Attempts are charged before the (slow) hash and refunded on success, so concurrent guesses cannot slip past
 * the check. The state is in the database (`throttles`), read and written in the caller's unit of work: every
 * replica behind a balancer counts against the same allowance, and write transactions run one at a time, so
 * guesses sent to several replicas at once are counted one by one too.
 */
export class LoginThrottle {
  private writes = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly opts: LoginThrottleOptions = DEFAULT_LOGIN_THROTTLE,
  ) {}

  /** Throws 429 when this attempt must wait; otherwise charges it as a failure until `succeed`. */
  async begin(r: Repos, ip: string, user: string): Promise<void> {
    const t = this.now();
    const bucket = this.refill(await r.throttles.get<Bucket>(addressKey(ip), t), t);
    if (bucket.tokens < 1) {
      throw new TooManyRequests('too many login attempts from this address, slow down', Math.ceil((1 - bucket.tokens) / this.opts.perAddressRate));
    }
    const key = pairKey(user, ip);
    // A pair forgotten (`forgetAfterMs` after its last failure) has expired: `get` does not return it.
    const pair = await r.throttles.get<PairState>(key, t);
    if (pair && pair.notBefore > t) {
      throw new TooManyRequests('too many failed logins for this user from this address, try again later', Math.ceil((pair.notBefore - t) / 1000));
    }
    bucket.tokens -= 1;
    // Until it is full again; a bucket not found is a full one.
    await r.throttles.put(addressKey(ip), bucket, t + ((this.opts.perAddressBurst - bucket.tokens) / this.opts.perAddressRate) * 1000);
    const failed = this.fail(pair, t);
    await r.throttles.put(key, failed, failed.lastFailure + this.opts.forgetAfterMs + 1);
    if (++this.writes % SWEEP_EVERY === 0) await r.throttles.sweep(t);
  }

  /** The password was right: the pair starts over. */
  async succeed(r: Repos, ip: string, user: string): Promise<void> {
    await r.throttles.delete(pairKey(user, ip));
  }

  private fail(pair: PairState | undefined, t: number): PairState {
    const p = pair ?? { failures: 0, notBefore: 0, lastFailure: t };
    p.failures++;
    p.lastFailure = t;
    const over = p.failures - this.opts.freeFailures;
    if (over >= 0) p.notBefore = t + Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** Math.min(over, 30));
    return p;
  }

  private refill(found: Bucket | undefined, t: number): Bucket {
    const b = found ?? { tokens: this.opts.perAddressBurst, at: t };
    b.tokens = Math.min(this.opts.perAddressBurst, b.tokens + ((t - b.at) / 1000) * this.opts.perAddressRate);
    b.at = t;
    return b;
  }
}

// JSON keys: a user name is typed by anyone and may hold any character (PostgreSQL text holds no NUL).
const pairKey = (user: string, ip: string) => JSON.stringify(['login-pair', user, ip]);
const addressKey = (ip: string) => JSON.stringify(['login-address', ip]);

/**
 * Counts failed unauthenticated attempts (enrollments, robot logins) per client address in fixed windows.
 * It is consulted only after a credential failed: a valid token or assertion is never refused by it, so a
 * fleet behind one NAT address (or a TLS proxy) cannot be locked out by one attacker sharing it. Past the
 * limit, failures are answered 429 and no longer audited one by one, so they cannot grow the log without bound.
 * Like the login throttle, the counts are in the database, in the caller's unit of work: one allowance for
 * all replicas.
 */
export class FailureWindow {
  private writes = 0;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts one failure; returns the seconds to wait when the address is over its limit, else 0. */
  async fail(r: Repos, ip: string): Promise<number> {
    const t = this.now();
    const key = JSON.stringify(['failures', ip]);
    // A window that has ended has expired: `get` does not return it.
    const w = (await r.throttles.get<{ failures: number; resetAt: number }>(key, t)) ?? { failures: 0, resetAt: t + this.windowMs };
    w.failures++;
    await r.throttles.put(key, w, w.resetAt);
    if (++this.writes % SWEEP_EVERY === 0) await r.throttles.sweep(t);
    return w.failures > this.max ? Math.ceil((w.resetAt - t) / 1000) : 0;
  }
}
