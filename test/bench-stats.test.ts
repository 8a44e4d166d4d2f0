/** The fleet benchmark's arithmetic: percentiles, arrivals, Retry-After, the retry delay, wrk's output. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff } from '../client/agent/backoff.js';
import { BadAnswer, retryDelay } from '../bench/fleet/robot.js';
import { addTally, arrivals, cpuMs, percentile, retryAfterMs, rssKiB, seededRandom, summarize, tallyText } from '../bench/fleet/stats.js';
import { parseWrk } from '../bench/fleet/steady.js';

test('nearest-rank percentiles', () => {
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1); // 1..100
  const cases: [number[], number, number][] = [
    [hundred, 50, 50],
    [hundred, 99, 99],
    [hundred, 100, 100],
    [hundred, 1, 1],
    [hundred, 0, 1],
    [[7], 50, 7],
    [[7], 99, 7],
    [[1, 2], 50, 1],
    [[1, 2], 51, 2],
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99, 10],
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9],
  ];
  for (const [values, p, want] of cases) assert.equal(percentile(values, p), want, `p${p} of ${values.length} values`);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('summarize sorts numerically (not as strings) and reports count, p50, p99, max', () => {
  const values = [100, 9, 20, 3, 1000, 5, 7, 11, 2, 40];
  assert.deepEqual(summarize(values), { count: 10, p50: 9, p99: 1000, max: 1000 });
  assert.deepEqual(values, [100, 9, 20, 3, 1000, 5, 7, 11, 2, 40], 'input left as it was');
  const many = Array.from({ length: 1000 }, (_, i) => 1000 - i); // 1000..1
  assert.deepEqual(summarize(many), { count: 1000, p50: 500, p99: 990, max: 1000 });
  const empty = summarize([]);
  assert.equal(empty.count, 0);
  assert.ok(Number.isNaN(empty.p50) && Number.isNaN(empty.max));
});

test('arrivals: in the window, the same for the same seed, different for another', () => {
  const a = arrivals(5000, 10_000, 1);
  assert.equal(a.length, 5000);
  assert.ok(a.every((t) => Number.isInteger(t) && t >= 0 && t < 10_000));
  assert.deepEqual(arrivals(5000, 10_000, 1), a);
  assert.notDeepEqual(arrivals(5000, 10_000, 2), a);
  // Uniform: each tenth of the window gets close to a tenth of the robots.
  const buckets = new Array<number>(10).fill(0);
  for (const t of a) buckets[Math.floor(t / 1000)]!++;
  for (const b of buckets) assert.ok(b > 400 && b < 600, `bucket of ${b}`);
  assert.deepEqual(arrivals(3, 0, 1), [0, 0, 0]);
  const r = seededRandom(42);
  assert.ok(Array.from({ length: 1000 }, r).every((v) => v >= 0 && v < 1));
});

test('Retry-After: seconds or an HTTP date; absent or garbage is undefined', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(retryAfterMs('5', now), 5000);
  assert.equal(retryAfterMs(' 0 ', now), 0);
  assert.equal(retryAfterMs(['2', '9'], now), 2000);
  assert.equal(retryAfterMs('Tue, 01 Jan 2030 00:00:30 GMT', now), 30_000);
  assert.equal(retryAfterMs('Mon, 31 Dec 2029 23:59:00 GMT', now), 0, 'a date in the past means now');
  assert.equal(retryAfterMs(undefined, now), undefined);
  assert.equal(retryAfterMs('', now), undefined);
  assert.equal(retryAfterMs('soon', now), undefined);
  assert.equal(retryAfterMs('-3', now), undefined);
});

test('retry delay: the agent\'s own policy (Retry-After honoured and spread; without it, full-jitter backoff)', () => {
  const backoff = new Backoff(1000, 300_000, () => 0.5);
  // Retry-After 4 s: never earlier, spread by a fifth (at least 1 s): 4000 + 0.5 × 1000.
  assert.equal(retryDelay(new BadAnswer('login-http-503', 4000), backoff), 4500);
  assert.equal(retryDelay(new BadAnswer('login-http-429', 20_000), backoff), 22_000);
  // No hint: full-jitter backoff, doubling (random fixed at 0.5 → half the ceiling).
  backoff.reset();
  assert.equal(retryDelay(new BadAnswer('bundle-http-500'), backoff), 500);
  assert.equal(retryDelay(new Error('ECONNRESET'), backoff), 1000);
  assert.equal(retryDelay(new Error('ECONNRESET'), backoff), 2000);
});

test('tallies merge and print largest first', () => {
  const t = addTally({ 'http-503': 2 }, { 'http-503': 3, ETIMEDOUT: 7, none: 0 });
  assert.deepEqual(t, { 'http-503': 5, ETIMEDOUT: 7, none: 0 });
  assert.equal(tallyText(t), 'ETIMEDOUT 7, http-503 5');
  assert.equal(tallyText({}), 'none');
});

test('/proc readings of this process are plausible; a missing process reads 0', () => {
  assert.ok(cpuMs(process.pid) > 0, 'loading this test alone took CPU');
  const rss = rssKiB(process.pid);
  assert.ok(rss * 1024 >= process.memoryUsage().heapUsed / 4 && rss > 1000, `rss ${rss} KiB`);
  assert.equal(cpuMs(2 ** 22 + 1), 0);
  assert.equal(rssKiB(2 ** 22 + 1), 0);
});

test("wrk's summary is parsed (req/s, bad answers, latency units)", () => {
  const out = [
    'Running 5s test @ https://127.0.0.1:8443/health',
    '  2 threads and 50 connections',
    '  Latency Distribution',
    '     50%  850.00us',
    '     75%    1.20ms',
    '     90%    2.00ms',
    '     99%   12.34ms',
    '  20000 requests in 5.00s, 3.00MB read',
    '  Socket errors: connect 0, read 2, write 0, timeout 1',
    '  Non-2xx or 3xx responses: 4',
    'Requests/sec:   4000.50',
    'Transfer/sec:    600.00KB',
  ].join('\n');
  assert.deepEqual(parseWrk(out), { tool: 'wrk', reqPerS: 4000.5, bad: 7, latencyP50Ms: 0.85, latencyP99Ms: 12.34 });
  assert.throws(() => parseWrk('unable to connect'), /no Requests\/sec/);
});
