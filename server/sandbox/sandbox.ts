import { AsyncLocalStorage } from 'node:async_hooks';
import { Worker } from 'node:worker_threads';
import { DomainError, InvalidInput, ServiceUnavailable } from '../errors.js';
import type { TaskName, Tasks } from './tasks.js';
import type { TaskReply } from './worker.js';

/**
 * Runs the reading of untrusted XML (policies, governance, keystore imports) in worker threads, so that a
 * document built to be expensive costs a worker its time, never the event loop: `/health`, logins and
 * long polls keep being answered. Each task has a time limit; a worker still busy at the limit is
 * terminated and the request refused (422). A worker's heap is capped too, so one task cannot take the
 * server's memory. Idle workers are kept for the next task (starting one costs tens of milliseconds).
 */

export interface SandboxOptions {
  /** Most time a policy or governance document may take to read (ms). */
  xmlTimeLimitMs: number;
  /** Most time an sros2 keystore archive may take to read and check (ms). */
  importTimeLimitMs: number;
  /** Tasks running at once; more wait their turn (each worker may grow to `maxHeapMb`). */
  maxWorkers?: number;
  maxHeapMb?: number;
}

/** What a task is about, for its refusal: "the policy took longer than …". */
const SUBJECT: Record<TaskName, { what: string; code: string; limit: 'xml' | 'import' }> = {
  policyXml: { what: 'the policy', code: 'invalid-policy', limit: 'xml' },
  policyArchive: { what: 'the policy archive', code: 'invalid-policy', limit: 'xml' },
  permissions: { what: 'the policy', code: 'invalid-policy', limit: 'xml' },
  governance: { what: 'the governance XML', code: 'invalid-governance', limit: 'xml' },
  keystoreArchive: { what: 'the keystore archive', code: 'invalid-keystore', limit: 'import' },
};

/** A worker that has not said it is ready within this long is broken (not the input's fault). */
const START_TIMEOUT_MS = 60_000;

interface Slot {
  worker: Worker;
  ready: Promise<void>;
}

export class XmlSandbox {
  private readonly idle: Slot[] = [];
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly maxWorkers: number;
  private readonly maxHeapMb: number;
  private closed = false;
  /** The deadline of the request being served, set by `within`. */
  private readonly budget = new AsyncLocalStorage<number>();
  /** `within` calls not yet settled. */
  private inside = 0;

  constructor(private readonly options: SandboxOptions) {
    this.maxWorkers = options.maxWorkers ?? 2;
    this.maxHeapMb = options.maxHeapMb ?? 1024;
  }

  /**
   * Runs `task` in a worker; resolves to its result, or rejects with its refusal (a DomainError). The time
   * limit runs from this call: waiting for a free worker, or for one to start, counts too, so every upload is
   * answered within its limit whatever else the sandbox is doing. A task that could not even start in time is
   * answered 503 (busy, not the input's fault); one still running at the limit 422.
   */
  async run<K extends TaskName>(task: K, input: Parameters<Tasks[K]>[0]): Promise<Awaited<ReturnType<Tasks[K]>>> {
    const subject = SUBJECT[task];
    const limitMs = subject.limit === 'import' ? this.options.importTimeLimitMs : this.options.xmlTimeLimitMs;
    const deadline = Math.min(performance.now() + limitMs, this.budget.getStore() ?? Infinity);
    if (this.running >= this.maxWorkers && !(await this.turn(deadline))) throw busy(subject.what);
    this.running++;
    try {
      return (await this.runInSlot(task, input, deadline)) as Awaited<ReturnType<Tasks[K]>>;
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  /**
   * Runs `fn` under one time limit for all the XML work it starts (reading a policy, its schema check, the
   * permissions made from it): a request does several steps, and the limit is what the uploader waits for.
   */
  within<T>(kind: 'xml' | 'import', fn: () => Promise<T>): Promise<T> {
    const limitMs = kind === 'import' ? this.options.importTimeLimitMs : this.options.xmlTimeLimitMs;
    this.inside++;
    return this.budget.run(performance.now() + limitMs, fn).finally(() => {
      // The storage's first run() turns on Node's promise hooks for the whole process, and they stay on: after
      // one policy upload, every request (a robot's poll included) paid for them on each promise. Off again
      // once no upload is being read; the next run() turns them on.
      if (--this.inside === 0) this.budget.disable();
    });
  }

  /**
   * Waits for XML work done outside the sandbox (the schema check, in xmllint's own worker) no longer than
   * the time left by `within`; past it the request is refused like a task past its limit (the check finishes
   * in its worker, off the event loop).
   */
  async bounded<T>(work: Promise<T>, what: string): Promise<T> {
    const deadline = this.budget.getStore();
    if (deadline === undefined) return work;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new InvalidInput(`${what} took longer than ${this.options.xmlTimeLimitMs} ms to read: it is refused`, undefined, 'invalid-policy')),
        Math.max(0, deadline - performance.now()),
      );
    });
    try {
      return await Promise.race([work, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for a running task to finish; false when `deadline` comes first. */
  private turn(deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.waiting.indexOf(wake);
        if (i >= 0) this.waiting.splice(i, 1);
        resolve(false);
      }, Math.max(0, deadline - performance.now()));
      this.waiting.push(wake);
    });
  }

  /** Starts the workers before the first task needs them (loading the task code takes a moment). */
  async warm(): Promise<void> {
    const slots: Slot[] = [];
    while (this.idle.length + slots.length < this.maxWorkers) slots.push(this.start());
    await Promise.all(slots.map((s) => s.ready));
    for (const s of slots) {
      if (this.closed || this.idle.length >= this.maxWorkers) {
        void s.worker.terminate();
        continue;
      }
      s.worker.unref();
      this.idle.push(s);
    }
  }

  /** Stops the idle workers (running ones end with their task). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.idle.splice(0).map((s) => s.worker.terminate()));
  }

  private async runInSlot(task: TaskName, input: unknown, deadline: number): Promise<unknown> {
    const slot = this.idle.pop() ?? this.start();
    slot.worker.ref();
    let reusable = false;
    let handedOff = false;
    try {
      if (!(await ready(slot, deadline))) {
        // Still starting (a worker just replaced, a loaded machine): it serves the next task, not this one.
        handedOff = true;
        slot.ready.then(() => this.keep(slot), () => {});
        throw busy(SUBJECT[task].what);
      }
      const result = await this.exchange(slot.worker, task, input, deadline);
      reusable = true;
      return result;
    } catch (err) {
      // A refusal leaves the worker sound; anything else (time limit, memory, crash) ends it.
      reusable = !handedOff && err instanceof DomainError && !(err as { fatal?: boolean }).fatal;
      throw err;
    } finally {
      // A handed-off slot is filed by keep() once it is ready.
      if (reusable) this.keep(slot);
      else if (!handedOff) {
        void slot.worker.terminate();
        // A replacement starts now, so the next upload does not wait for a worker to load its code.
        if (!this.closed) this.warm().catch(() => {});
      }
    }
  }

  /** Files a sound worker as idle, or ends it when enough are idle or the sandbox is closed. */
  private keep(slot: Slot): void {
    if (!this.closed && this.idle.length < this.maxWorkers) {
      slot.worker.unref();
      this.idle.push(slot);
    } else {
      void slot.worker.terminate();
    }
  }

  private start(): Slot {
    const worker = spawnWorker(this.maxHeapMb);
    // An idle worker must not keep the process alive, nor an error of one crash it.
    worker.on('error', () => {});
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the XML sandbox worker did not start')), START_TIMEOUT_MS);
      const onExit = (code: number) => {
        clearTimeout(timer);
        reject(new Error(`the XML sandbox worker exited with ${code} while starting`));
      };
      worker.once('exit', onExit);
      worker.once('message', (m) => {
        clearTimeout(timer);
        worker.off('exit', onExit);
        if (m === 'ready') resolve();
        else reject(new Error('the XML sandbox worker said something unexpected'));
      });
    });
    ready.catch(() => {});
    return { worker, ready };
  }

  private exchange(worker: Worker, task: TaskName, input: unknown, deadline: number): Promise<unknown> {
    const subject = SUBJECT[task];
    const limitMs = subject.limit === 'import' ? this.options.importTimeLimitMs : this.options.xmlTimeLimitMs;
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      const refuse = (message: string): void => {
        done();
        reject(Object.assign(new InvalidInput(message, undefined, subject.code), { fatal: true }));
      };
      const timer = setTimeout(() => {
        refuse(`${subject.what} took longer than ${limitMs} ms to read: it is refused`);
      }, Math.max(0, deadline - performance.now()));
      const onMessage = (reply: TaskReply): void => {
        done();
        if (reply.ok) resolve(reply.result);
        else if ('refusal' in reply) {
          const { status, code, message, details } = reply.refusal;
          reject(status === 422 ? new InvalidInput(message, details, code) : new DomainError(status, code, message, details));
        } else reject(new Error(`XML sandbox task ${task} failed: ${reply.failure}`));
      };
      const onError = (err: Error): void => {
        if ((err as NodeJS.ErrnoException).code === 'ERR_WORKER_OUT_OF_MEMORY') {
          refuse(`${subject.what} needs more than ${this.maxHeapMb} MiB of memory to read: it is refused`);
        } else {
          done();
          reject(Object.assign(new Error(`XML sandbox task ${task} crashed`), { cause: err }));
        }
      };
      const onExit = (code: number): void => {
        done();
        reject(new Error(`the XML sandbox worker exited with ${code}`));
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      worker.postMessage({ task, input });
    });
  }
}

/** Whether the slot's worker is ready before `deadline` (a worker that fails to start throws). */
async function ready(slot: Slot, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, deadline - performance.now()))));
  try {
    return await Promise.race([slot.ready.then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

function busy(what: string): ServiceUnavailable {
  return new ServiceUnavailable(`the server is reading other uploads and could not start on ${what} in time; retry shortly`, 2, 'sandbox-busy');
}

/**
 * The worker runs `worker.ts` under tsx when this module is TypeScript itself (tests, `tsx server/main.ts`)
 * and the compiled `worker.js` next to it otherwise (`npm start`, from dist/). Hooks registered with
 * `--import tsx` do not reach workers in Node 20, so the TypeScript worker registers tsx itself.
 */
function spawnWorker(maxHeapMb: number): Worker {
  const resourceLimits = { maxOldGenerationSizeMb: maxHeapMb };
  if (import.meta.url.endsWith('.ts')) {
    const entry = new URL('./worker.ts', import.meta.url).href;
    const tsx = import.meta.resolve('tsx/esm/api');
    const code = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
    return new Worker(code, { eval: true, resourceLimits });
  }
  return new Worker(new URL('./worker.js', import.meta.url), { resourceLimits });
}
