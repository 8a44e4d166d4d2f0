/**
 * The agent's retry policy as pure functions (backoff.ts, parseRetryAfter in common/http.ts), with an injected
 * random source: no clock, no sleeping. The pull loop is checked to pass the server's Retry-After on (the
 * delay it announces through onTrouble). Against the real server, agent-run.test.ts stops and restarts it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, classifyTrouble, retryDelay, RETRY_AFTER_MAX_MS, UNREACHABLE_CAP_MS, type Trouble } from '../client/agent/backoff.js';
import { HttpStatusError, NetworkError, parseRetryAfter, statusError, type HttpResponse } from '../client/common/http.js';
import { watchBundles } from '../client/agent/watch.js';

const TOP = 0.999999; // random() is < 1: the largest value it can return, near enough
const unreachable: Trouble = { kind: 'unreachable' };
const failing: Trouble = { kind: 'failing' };
const defaults = { baseMs: 1000, capMs: 300_000 }; // --backoff-base 1, --backoff-max 300

describe('agent back-off policy', () => {
  test('server unreachable: exponential, full jitter, never above 30 s even with --backoff-max 300', () => {
    const ceilings = Array.from({ length: 40 }, (_, n) => retryDelay(defaults, n, unreachable, () => TOP) + 1);
    assert.deepEqual(ceilings.slice(0, 7), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.ok(ceilings.every((c) => c <= UNREACHABLE_CAP_MS), `${ceilings}`);
    assert.equal(UNREACHABLE_CAP_MS, 30_000);
    // Full jitter: anywhere from 0 to the ceiling, as the random source says.
    assert.equal(retryDelay(defaults, 20, unreachable, () => 0), 0);
    assert.equal(retryDelay(defaults, 20, unreachable, () => 0.5), 15_000);
    // A --backoff-max below 30 s still caps it.
    assert.equal(retryDelay({ baseMs: 1000, capMs: 5000 }, 20, unreachable, () => TOP), 4999);
  });

  test('other failures back off up to --backoff-max (300 s by default)', () => {
    const waits = Array.from({ length: 12 }, (_, n) => retryDelay(defaults, n, failing, () => TOP) + 1);
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000]);
  });

  test('Retry-After replaces the computed wait: never earlier than asked, spread by up to a fifth (1 to 10 s), bounded', () => {
    const at = (retryAfterMs: number, r: number, attempt = 0, kind: Trouble['kind'] = 'failing'): number =>
      retryDelay(defaults, attempt, { kind, retryAfterMs }, () => r);
    assert.equal(at(2000, 0), 2000);
    assert.equal(at(2000, TOP), 2999, 'at least 1 s of spread');
    assert.equal(at(30_000, 0), 30_000);
    assert.equal(at(30_000, TOP), 35_999, 'a fifth of 30 s');
    assert.equal(at(60_000, TOP), 69_999, 'a fifth of 60 s is more than 10 s');
    assert.equal(at(3600_000, 0), RETRY_AFTER_MAX_MS, 'an hour is taken as the maximum');
    assert.equal(at(3600_000, TOP), RETRY_AFTER_MAX_MS + 9999, 'spread at most 10 s');
    assert.equal(at(-5000, 0), 0);
    // It wins over the attempt count, in both directions: later than a short back-off, earlier than the 30 s cap.
    assert.equal(at(45_000, 0, 0, 'unreachable'), 45_000);
    assert.equal(at(5000, 0, 30, 'unreachable'), 5000);
    assert.equal(at(Number.NaN, TOP, 3), 7999, 'an unusable value is ignored');
  });

  test('Backoff counts attempts and starts over after reset', () => {
    const b = new Backoff(1000, 300_000, () => TOP);
    assert.deepEqual([1, 2, 3].map(() => b.next(unreachable)), [999, 1999, 3999]);
    b.reset();
    assert.equal(b.next(failing), 999);
  });

  test('which errors count as "server unreachable", and which Retry-After is honoured', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'EAI_AGAIN', undefined]) {
      assert.deepEqual(classifyTrouble(new NetworkError('x', code)), unreachable, String(code));
    }
    assert.deepEqual(classifyTrouble(new NetworkError('TLS', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE')), failing, 'a wrong CA is not an outage');
    assert.deepEqual(classifyTrouble(new NetworkError('big', 'ETOOBIG')), failing);
    for (const status of [502, 503, 504]) assert.deepEqual(classifyTrouble(new HttpStatusError(status, undefined, undefined, 'b')), unreachable);
    assert.deepEqual(classifyTrouble(new HttpStatusError(503, undefined, undefined, 'b', 7000)), { kind: 'unreachable', retryAfterMs: 7000 });
    assert.deepEqual(classifyTrouble(new HttpStatusError(429, 'too-many-requests', undefined, 'b', 3000)), { kind: 'failing', retryAfterMs: 3000 });
    assert.deepEqual(classifyTrouble(new HttpStatusError(500, undefined, undefined, 'b', 3000)), failing, 'only 429 and 503 carry a Retry-After');
    assert.deepEqual(classifyTrouble(new Error('bundle refused')), failing);
  });

  test('Retry-After: delta-seconds or an HTTP date, against the server\'s Date when it sent one', () => {
    const now = Date.parse('2030-05-01T10:00:00Z'); // any instant: only differences matter
    assert.equal(parseRetryAfter('120', undefined, now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', undefined, now), 0);
    const serverDate = new Date(now + 3600_000).toUTCString(); // the server's clock is an hour ahead of ours
    const in90s = new Date(now + 3600_000 + 90_000).toUTCString();
    assert.equal(parseRetryAfter(in90s, serverDate, now), 90_000, 'measured on the server\'s clock');
    assert.equal(parseRetryAfter(new Date(now + 30_000).toUTCString(), undefined, now), 30_000, 'no Date header: this clock');
    assert.equal(parseRetryAfter(new Date(now - 30_000).toUTCString(), undefined, now), 0, 'a date in the past: now');
    for (const bad of ['soon', '1.5', '-3', '', '99999999999']) assert.equal(parseRetryAfter(bad, undefined, now), undefined, bad);
    assert.equal(parseRetryAfter(undefined, undefined, now), undefined);

    const res = (status: number, headers: Record<string, string>): HttpResponse => ({ status, headers, body: Buffer.alloc(0), sentAt: now, receivedAt: now });
    assert.equal(statusError(res(503, { 'retry-after': '7' }), 'bundle').retryAfterMs, 7000);
    assert.equal(statusError(res(503, { 'retry-after': in90s, date: serverDate }), 'bundle').retryAfterMs, 90_000);
    assert.equal(statusError(res(503, {}), 'bundle').retryAfterMs, undefined);
  });

  test('the pull loop waits what the server\'s Retry-After asked for (and says so)', async () => {
    for (const [err, expected] of [
      [new HttpStatusError(429, 'too-many-requests', undefined, 'login', 4000), 4000],
      [new HttpStatusError(503, undefined, undefined, 'bundle', 45_000), 45_000],
      [new NetworkError('GET /v1/robot/bundle: connection refused', 'ECONNREFUSED'), 29_999],
    ] as const) {
      const abort = new AbortController();
      const delays: number[] = [];
      const lines: string[] = [];
      const backoff = new Backoff(1000, 300_000, () => (err instanceof NetworkError ? TOP : 0));
      for (let i = 0; i < 8; i++) backoff.next(); // deep into an outage: the computed back-off would be long
      await watchBundles({
        client: { fetchBundle: () => Promise.reject(err) },
        log: { debug() {}, info() {}, warn: (m) => void lines.push(m), error: (m) => void lines.push(m) },
        signal: abort.signal,
        pollWaitS: 30,
        backoff,
        onBundle: () => undefined,
        onTrouble: (_m, delayMs) => {
          delays.push(delayMs);
          abort.abort(); // the loop's sleep ends at once: nothing here waits for a clock
        },
      });
      assert.deepEqual(delays, [expected], err.message);
      if (err instanceof HttpStatusError) assert.match(lines[0]!, new RegExp(`retrying in ${(expected / 1000).toFixed(1)} s \\(the server asked for ${expected / 1000} s\\)`));
    }
  });
});
