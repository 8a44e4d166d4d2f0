/**
 * The parent's side of the robot workers: forks them, deals robots out round-robin (so every worker sees
 * the whole arrival window), sends commands and merges the answers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CollectResult, FromWorker, StormKind, StormResult, ToWorker } from './protocol.js';
import { addTally, type Tally } from './stats.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.ts');

export interface RobotSpec {
  name: string;
  token: string;
  url: string;
}

export class RobotPool {
  private readonly workers: ChildProcess[] = [];
  /** Robot indices (into the fleet) each worker holds, in its order. */
  private readonly shares: number[][] = [];
  private nextId = 1;
  private readonly pending = new Map<string, (msg: FromWorker) => void>();
  private failure: Error | undefined;

  constructor(
    count: number,
    private readonly onProgress: (done: number) => void = () => {},
    /** Write each worker's V8 CPU profile into this folder when it stops: the robots' side of a storm. */
    cpuProfDir?: string,
  ) {
    const profile = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
    for (let w = 0; w < count; w++) {
      const child = fork(WORKER, [], { execArgv: ['--import', 'tsx', ...profile], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      child.on('message', (msg: FromWorker) => this.receive(w, msg));
      child.on('exit', (code, signal) => {
        if (code !== 0 && code !== null) this.fail(new Error(`robot worker ${w} exited with ${code}`));
        else if (signal && signal !== 'SIGTERM') this.fail(new Error(`robot worker ${w} was killed by ${signal}`));
      });
      this.workers.push(child);
      this.shares.push([]);
    }
  }

  pids(): number[] {
    return this.workers.filter((w) => w.exitCode === null && w.pid !== undefined).map((w) => w.pid!);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const resolve of this.pending.values()) resolve({ type: 'error', message: err.message });
    this.pending.clear();
  }

  private receive(w: number, msg: FromWorker): void {
    if (msg.type === 'progress') return this.onProgress(msg.done);
    if (msg.type === 'error') return this.fail(new Error(`robot worker ${w}: ${msg.message}`));
    const key = 'id' in msg ? `${w}:${msg.id}` : `${w}:${msg.type}`;
    const resolve = this.pending.get(key);
    this.pending.delete(key);
    resolve?.(msg);
  }

  /** Sends `make(w)` to every worker and waits for the answer of type `answer` from each. */
  private async all<T extends FromWorker['type']>(make: (w: number, id: number) => ToWorker, answer: T): Promise<Extract<FromWorker, { type: T }>[]> {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    const answers = await Promise.all(
      this.workers.map(
        (child, w) =>
          new Promise<FromWorker>((resolve) => {
            const msg = make(w, id);
            this.pending.set('id' in msg ? `${w}:${id}` : `${w}:${answer}`, resolve);
            child.send(msg);
          }),
      ),
    );
    if (this.failure) throw this.failure;
    return answers as Extract<FromWorker, { type: T }>[];
  }

  async enroll(robots: RobotSpec[], caPem: string, pollWaitS: number, validate: boolean): Promise<{ enrolled: number; failed: number; errors: Tally }> {
    robots.forEach((_, i) => this.shares[i % this.workers.length]!.push(i));
    const answers = await this.all((w) => ({ type: 'init', caPem, pollWaitS, validate, robots: this.shares[w]!.map((i) => robots[i]!) }), 'enrolled');
    return {
      enrolled: answers.reduce((s, a) => s + a.count, 0),
      failed: answers.reduce((s, a) => s + a.failed, 0),
      errors: answers.reduce((t, a) => addTally(t, a.errors), {} as Tally),
    };
  }

  /**
   * Runs a storm: robot i arrives at startAt + offsets[i] (offsets in fleet order). With `pollAfterBoot`, a
   * booted robot goes straight into its long poll, as the agent does.
   */
  async storm(kind: StormKind, startAt: number, offsets: number[], giveUpAfterMs: number, pollAfterBoot = false): Promise<StormResult> {
    const answers = await this.all((w, id) => ({ type: 'storm', id, kind, startAt, giveUpAfterMs, pollAfterBoot, offsets: this.shares[w]!.map((i) => offsets[i]!) }), 'storm-done');
    const merged: StormResult = { served: [], neverServed: 0, attempts: 0, longestAttemptMs: 0, startLagMs: [], errors: {} };
    for (const { result: r } of answers) {
      merged.served.push(...r.served);
      merged.startLagMs.push(...r.startLagMs);
      merged.neverServed += r.neverServed;
      merged.attempts += r.attempts;
      merged.longestAttemptMs = Math.max(merged.longestAttemptMs, r.longestAttemptMs);
      addTally(merged.errors, r.errors);
    }
    return merged;
  }

  startPolling(spreadMs: number): void {
    for (const w of this.workers) w.send({ type: 'poll-start', spreadMs } satisfies ToWorker);
  }

  async status(): Promise<{ waiting: number; holding: number; robots: number; reportsPending: number }> {
    const answers = await this.all((_, id) => ({ type: 'status', id }), 'status');
    return {
      waiting: answers.reduce((s, a) => s + a.waiting, 0),
      holding: answers.reduce((s, a) => s + a.holding, 0),
      robots: answers.reduce((s, a) => s + a.robots, 0),
      reportsPending: answers.reduce((s, a) => s + a.reportsPending, 0),
    };
  }

  async mark(): Promise<void> {
    await this.all((_, id) => ({ type: 'mark', id }), 'marked');
  }

  async collect(since: number, pollWaitS: number): Promise<CollectResult> {
    const answers = await this.all((_, id) => ({ type: 'collect', id, since, pollWaitS }), 'collected');
    return {
      changed: answers.flatMap((a) => a.result.changed),
      woken: answers.flatMap((a) => a.result.woken),
      errors: answers.reduce((t, a) => addTally(t, a.result.errors), {} as Tally),
    };
  }

  /** A fresh robot token and the etag of the bundle that robot holds (for the steady-state runs). */
  async oneRobotToken(): Promise<{ name: string; token: string; etag: string }> {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    const msg = await new Promise<FromWorker>((resolve) => {
      this.pending.set(`0:${id}`, resolve);
      this.workers[0]!.send({ type: 'token', id } satisfies ToWorker);
    });
    if (msg.type !== 'token') throw this.failure ?? new Error('no token from worker 0');
    return msg;
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.exitCode !== null || w.signalCode !== null) return resolve();
            const timer = setTimeout(() => w.kill('SIGTERM'), 20_000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            if (w.connected) w.send({ type: 'stop' } satisfies ToWorker);
            else w.kill('SIGTERM');
          }),
      ),
    );
  }
}
