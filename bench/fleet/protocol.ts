/** Messages between the benchmark (parent) and its robot worker processes (IPC of child_process.fork). */
import type { Tally } from './stats.js';

/** `boot-identity`: a boot in per-robot mode, the bundle then one CSR per enclave that has no certificate yet. */
export type StormKind = 'control' | 'boot' | 'boot-identity';

export type ToWorker =
  | { type: 'init'; caPem: string; pollWaitS: number; validate: boolean; robots: { name: string; token: string; url: string }[] }
  | { type: 'storm'; id: number; kind: StormKind; startAt: number; offsets: number[]; giveUpAfterMs: number; pollAfterBoot: boolean }
  | { type: 'poll-start'; spreadMs: number }
  | { type: 'status'; id: number }
  | { type: 'mark'; id: number }
  | { type: 'collect'; id: number; since: number; pollWaitS: number }
  | { type: 'token'; id: number }
  | { type: 'stop' };

export interface StormResult {
  /** ms from each robot's first attempt to success. */
  served: number[];
  neverServed: number;
  attempts: number;
  /** The longest any single attempt waited for an answer (or its timeout). */
  longestAttemptMs: number;
  /** How late robots started against their scheduled arrival: high values mean the client, not the server, lagged. */
  startLagMs: number[];
  errors: Tally;
}

export interface CollectResult {
  /** Robots that received a changed bundle since `since`: name and the receive time (epoch ms). */
  changed: { name: string; at: number }[];
  /** Robots (by name) answered before their poll's wait ran out, for any reason, since `since`. */
  woken: string[];
  errors: Tally;
}

export type FromWorker =
  | { type: 'enrolled'; count: number; failed: number; errors: Tally }
  | { type: 'storm-done'; id: number; result: StormResult }
  | { type: 'status'; id: number; waiting: number; holding: number; robots: number; reportsPending: number }
  | { type: 'marked'; id: number }
  | { type: 'collected'; id: number; result: CollectResult }
  | { type: 'token'; id: number; name: string; token: string; etag: string }
  | { type: 'progress'; done: number }
  | { type: 'error'; message: string };
