import { TooManyRequests } from '../errors.js';

interface Window {
  failures: number;
  resetAt: number;
}

/**
 * Counts failed logins per client IP and per user name in fixed windows. Every attempt is charged before
 * the password is checked and refunded when it was right, so a user who types the right password is never
 * slowed down and concurrent guesses cannot slip past the limit. Once a key reaches its limit every attempt
 * (right or wrong) gets 429 until the window ends, which stops online guessing against one account and from
 * one address. In memory: one server process holds the counters.
 */
export class LoginLimiter {
  private readonly byIp = new Map<string, Window>();
  private readonly byUser = new Map<string, Window>();

  constructor(
    private readonly maxPerUser = 5,
    private readonly maxPerIp = 20,
    private readonly windowMs = 15 * 60 * 1000,
    private readonly now: () => number = Date.now,
  ) {}

  check(ip: string, user: string): void {
    const t = this.now();
    for (const [map, key, max] of [
      [this.byIp, ip, this.maxPerIp],
      [this.byUser, user, this.maxPerUser],
    ] as const) {
      const w = map.get(key);
      if (w && w.resetAt > t && w.failures >= max) {
        throw new TooManyRequests('too many failed logins, try again later', Math.ceil((w.resetAt - t) / 1000));
      }
    }
  }

  fail(ip: string, user: string): void {
    const t = this.now();
    for (const [map, key] of [
      [this.byIp, ip],
      [this.byUser, user],
    ] as const) {
      const w = map.get(key);
      if (!w || w.resetAt <= t) map.set(key, { failures: 1, resetAt: t + this.windowMs });
      else w.failures++;
    }
    if (this.byIp.size + this.byUser.size > 100_000) this.sweep(t);
  }

  /** A right password: the user's count starts over; the attempt charged to the address is refunded. */
  succeed(ip: string, user: string): void {
    this.byUser.delete(user);
    const w = this.byIp.get(ip);
    if (w && w.failures > 0) w.failures--;
  }

  private sweep(t: number): void {
    for (const map of [this.byIp, this.byUser]) {
      for (const [k, w] of map) if (w.resetAt <= t) map.delete(k);
    }
  }
}
