import os from 'node:os';
import { parentPort } from 'node:worker_threads';
import { DomainError } from '../errors.js';
import { tasks, type TaskName } from './tasks.js';

/** The sandbox thread: runs one task at a time for `sandbox.ts`, answering each with its result or refusal. */
export interface TaskRequest {
  task: TaskName;
  input: unknown;
}

export type TaskReply =
  | { ok: true; result: unknown }
  | { ok: false; refusal: { status: number; code: string; message: string; details?: unknown } }
  | { ok: false; failure: string };

// Reading uploads is background work: on Linux this lowers only this thread's priority (nice 19), so
// that on a busy machine the event loop (/health, logins, long polls) gets the CPU first.
try {
  os.setPriority(19);
} catch {
  // Not permitted or not supported: the time limit still bounds the task.
}

const port = parentPort!;
port.on('message', async ({ task, input }: TaskRequest) => {
  let reply: TaskReply;
  try {
    const run = tasks[task] as (input: unknown) => unknown;
    reply = { ok: true, result: await run(input) };
  } catch (err) {
    reply =
      err instanceof DomainError
        ? { ok: false, refusal: { status: err.status, code: err.code, message: err.message, details: err.details } }
        : { ok: false, failure: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
  }
  port.postMessage(reply);
});
port.postMessage('ready');
