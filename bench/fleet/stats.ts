/**
 * Numbers for the fleet benchmark: latency summaries (nearest-rank percentiles), error tallies, and what
 * /proc says about a process (CPU ticks, resident memory).
 */
import fs from 'node:fs';

export interface Summary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * Nearest-rank percentile of an ascending array: the smallest value with at least p % of the values at or
 * below it. Nearest-rank (not interpolation) so every reported figure is a latency some robot really saw.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  if (p <= 0) return sorted[0]!;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = Float64Array.from(values).sort();
  const arr = Array.from(sorted);
  return { count: arr.length, p50: percentile(arr, 50), p99: percentile(arr, 99), max: arr.length ? arr[arr.length - 1]! : Number.NaN };
}

/** Counts by kind (`http-503`, `ETIMEDOUT`, ...), merged from several workers. */
export type Tally = Record<string, number>;

export function addTally(into: Tally, from: Tally): Tally {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
  return into;
}

export function tallyText(t: Tally): string {
  const entries = Object.entries(t).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]);
  return entries.length ? entries.map(([k, v]) => `${k} ${v}`).join(', ') : 'none';
}

/** Clock ticks per second for /proc/<pid>/stat times (USER_HZ: 100 on every Linux Node supports). */
const TICKS_PER_S = 100;

/** utime + stime of a process in ms, from /proc/<pid>/stat; 0 once the process is gone. */
export function cpuMs(pid: number): number {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / TICKS_PER_S;
}

/** Resident set size in KiB (VmRSS), 0 once the process is gone. */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export const sumCpuMs = (pids: readonly number[]): number => pids.reduce((s, p) => s + cpuMs(p), 0);
export const sumRssKiB = (pids: readonly number[]): number => pids.reduce((s, p) => s + rssKiB(p), 0);

/** Samples the summed RSS of some processes until stopped; keeps the peak. */
export class RssSampler {
  peakKiB = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly pids: () => readonly number[], everyMs = 200) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }
  sample(): number {
    const kib = sumRssKiB(this.pids());
    if (kib > this.peakKiB) this.peakKiB = kib;
    return kib;
  }
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peakKiB;
  }
}

/** A deterministic PRNG (mulberry32), so two phases of one run can share the same arrival times. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Arrival offsets (ms) of `n` robots, uniform over `windowMs`, in robot order. */
export function arrivals(n: number, windowMs: number, seed: number): number[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(rnd() * windowMs));
}

/** `Retry-After` as ms: delta-seconds or an HTTP date (relative to `now`); undefined when absent or invalid. */
export function retryAfterMs(header: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  // An HTTP-date names its weekday and month; Date.parse would also take "-3" as a year.
  if (!/^[A-Za-z]{3}, /.test(v.trim())) return undefined;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The machine's CPU time counters (`/proc/stat`, all cores, in ticks): total and stolen by the host. */
export function cpuTicks(): { total: number; steal: number } {
  const fields = /^cpu\s+(.*)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'))?.[1]?.trim().split(/\s+/).map(Number) ?? [];
  // user nice system idle iowait irq softirq steal (guest time is counted in user already)
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, steal: fields[7] ?? 0 };
}

/** Share of the machine's time the host gave to others between two readings (0 when unknown). */
export const stealShare = (a: { total: number; steal: number }, b: { total: number; steal: number }): number =>
  b.total > a.total ? (b.steal - a.steal) / (b.total - a.total) : 0;
