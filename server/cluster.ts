/**
 * Several server processes on one host (`--workers N`), sharing its port through Node's cluster module: one event
 * loop does TLS, crypto, SQL and fan-out for its share of the fleet, so a host with more cores serves more robots.
 *
 * The primary serves nothing. It prepares what must be made exactly once before anyone serves (data folder,
 * migrations, master key, token secret, self-generated TLS, first administrator), forks the workers, restarts
 * one that dies, and relays "changes committed" between them. Each worker is a whole server, as a replica on
 * PostgreSQL is: its own caches and long polls, the same store. Changes reach every worker through the change
 * log, as they reach every replica: a worker that commits one tells its siblings through the primary (on
 * PostgreSQL the commit's NOTIFY tells them too), and each reads the log on its own poll as a safety net.
 */
import cluster, { type Worker } from 'node:cluster';
import { setTimeout as sleep } from 'node:timers/promises';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from './logger.js';
import type { HttpMetrics } from './ops/metrics.js';

/** The one message workers and primary exchange: some worker committed changes to the change log. */
const CHANGED = 'enclave:changes-committed';

/** A worker asks the primary for every worker's metrics, summed; the primary answers with the text. */
const METRICS_ASK = 'enclave:metrics';
const METRICS_ANSWER = 'enclave:metrics-answer';
interface MetricsAnswer {
  kind: typeof METRICS_ANSWER;
  id: number;
  text?: string;
}

/** A worker that dies this soon after its start, this many times in a row, is not started again. */
const CRASH_WINDOW_MS = 30_000;
const CRASHES_TOLERATED = 5;

export const isWorker = (): boolean => cluster.isWorker;

/** In a worker: tells the siblings that this one committed changes (see `onSiblingChanges`). */
export function tellSiblings(): void {
  if (cluster.isWorker) process.send?.(CHANGED);
}

/** In a worker: `wake` runs when a sibling committed changes. */
export function onSiblingChanges(wake: () => void): void {
  if (cluster.isWorker) process.on('message', (msg) => msg === CHANGED && wake());
}

/**
 * In a worker: `/metrics` answers with the sum over every worker (prom-client's AggregatorRegistry, run by the
 * primary), whichever worker the scrape reached; a worker that does not answer within 5 s makes it a 500.
 */
export function sumMetricsOverWorkers(metrics: HttpMetrics): void {
  if (!cluster.isWorker) return;
  // Constructing one makes this worker answer the primary's collection requests, with the app's registry.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries(metrics.registry);
  let next = 0;
  const waiting = new Map<number, (answer: MetricsAnswer) => void>();
  process.on('message', (msg: MetricsAnswer) => {
    if (msg?.kind === METRICS_ANSWER) waiting.get(msg.id)?.(msg);
  });
  metrics.sumOverWorkers(
    () =>
      new Promise<string>((resolve, reject) => {
        const id = next++;
        waiting.set(id, (answer) => {
          waiting.delete(id);
          if (answer.text === undefined) reject(new Error('the workers did not all report their metrics'));
          else resolve(answer.text);
        });
        process.send?.({ kind: METRICS_ASK, id });
      }),
  );
}

/**
 * In the primary, once `primary` (main.ts) has made what the workers share: forks `count` workers and keeps them running
 * until SIGTERM or SIGINT, which it passes on (each worker drains its own connections). Resolves with the exit
 * code: 0 after a signal, 1 when workers fail at start or keep crashing.
 */
export async function runWorkers(count: number, logger: Logger): Promise<number> {
  let stopping = false;
  /** Workers alive, with when each started. */
  const starts = new Map<Worker, number>();
  const listening = new Set<Worker>();
  let crashes = 0;
  let finish: (code: number) => void = () => {};
  const outcome = new Promise<number>((resolve) => (finish = resolve));
  const aggregator = new AggregatorRegistry();

  const fork = (slot: number): void => {
    const worker = cluster.fork({ ENCLAVE_WORKER_SLOT: String(slot) });
    starts.set(worker, Date.now());
    worker.on('listening', () => {
      listening.add(worker);
      if (listening.size === count) logger.info({ workers: count }, 'all workers listening');
    });
    worker.on('message', (msg: unknown) => {
      if (typeof msg === 'object' && msg !== null && (msg as { kind?: unknown }).kind === METRICS_ASK) {
        const { id } = msg as { id: number };
        aggregator.clusterMetrics().then(
          (text) => worker.isConnected() && worker.send({ kind: METRICS_ANSWER, id, text } satisfies MetricsAnswer),
          () => worker.isConnected() && worker.send({ kind: METRICS_ANSWER, id } satisfies MetricsAnswer),
        );
        return;
      }
      if (msg !== CHANGED) return;
      for (const other of starts.keys()) if (other !== worker && other.isConnected()) other.send(CHANGED);
    });
    worker.on('exit', (code, signal) => {
      const lived = Date.now() - starts.get(worker)!;
      const everListened = listening.delete(worker);
      starts.delete(worker);
      if (stopping) {
        if (starts.size === 0) finish(0);
        return;
      }
      // A worker that never came up (a port in use, a database away) would fail the same way again.
      if (!everListened) {
        logger.fatal({ slot, code, signal }, 'a worker failed to start');
        stopAll();
        finish(1);
        return;
      }
      crashes = lived < CRASH_WINDOW_MS ? crashes + 1 : 1;
      if (crashes > CRASHES_TOLERATED) {
        logger.fatal({ slot, code, signal, crashes }, 'workers keep crashing; stopping');
        stopAll();
        finish(1);
        return;
      }
      logger.error({ slot, code, signal }, 'a worker died; starting another');
      void sleep(Math.min(200 * 2 ** crashes, 5_000)).then(() => !stopping && fork(slot));
    });
  };

  const stopAll = (): void => {
    stopping = true;
    for (const w of starts.keys()) w.process.kill('SIGTERM');
    if (starts.size === 0) finish(0);
  };
  const onSignal = (signal: string) => {
    if (stopping) return;
    logger.info({ signal, workers: starts.size }, 'shutting down workers');
    stopAll();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  for (let slot = 1; slot <= count; slot++) fork(slot);
  return outcome;
}
