/** Runs the real `enclave-agent` (TypeScript source through tsx) as a child process, plus small waiting helpers. */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT_MAIN = join(REPO, 'client/agent/main.ts');

export interface AgentProc {
  child: ChildProcess;
  /** stderr so far (log lines). */
  stderr(): string;
  stdout(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stderr line matching `re`. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
}

export function spawnAgent(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): AgentProc {
  const child = spawn(process.execPath, ['--import', 'tsx', AGENT_MAIN, ...args], {
    cwd: opts.cwd ?? REPO,
    env: { ...process.env, JOURNAL_STREAM: undefined, NOTIFY_SOCKET: undefined, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      const line = err.split('\n').find((l) => w.re.test(l));
      if (line !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (process.env.AGENT_TEST_DEBUG) process.stderr.write(`[agent ${child.pid}] ${d.toString()}`);
    check();
  });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal })),
  );
  return {
    child,
    stderr: () => err,
    stdout: () => out,
    exited,
    waitForLog(re, timeoutMs = 10_000) {
      return new Promise<string>((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`no log line matching ${re} within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
        waiters.push({
          re,
          resolve: (line) => {
            clearTimeout(timer);
            res(line);
          },
        });
        check();
      });
    },
  };
}

/** Runs the agent to completion. */
export async function runAgent(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = spawnAgent(args, opts);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  return { code, signal, stdout: p.stdout(), stderr: p.stderr() };
}

export async function waitUntil(what: string, fn: () => boolean, timeoutMs = 10_000, intervalMs = 10): Promise<number> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return Date.now() - start;
}

/** A fresh private folder on tmpfs (/dev/shm), removed by `cleanup`. */
export function shmDir(prefix: string): string {
  return fs.mkdtempSync(`/dev/shm/${prefix}-`);
}

export function exists(path: string): boolean {
  try {
    fs.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Every file under `dir` (following nothing), relative paths. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const name of fs.readdirSync(d)) {
      const p = join(d, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(p);
      out.push(st.isDirectory() ? `${r}/` : st.isSymbolicLink() ? `${r}@` : r);
      if (st.isDirectory()) walk(p, r);
    }
  };
  if (exists(dir)) walk(dir, '');
  return out.sort();
}

/** Enrolls a fresh state folder (under `base`) with the agent CLI; returns the folder. */
export async function enrollAgent(opts: { base: string; server: string; caFile?: string; token: string }): Promise<string> {
  const stateDir = fs.mkdtempSync(join(opts.base, 'state-'));
  fs.rmdirSync(stateDir); // the agent creates it (0700)
  const args = ['enroll', '--server', opts.server, '--token', opts.token, '--state-dir', stateDir];
  if (opts.caFile) args.push('--ca', opts.caFile);
  const r = await runAgent(args);
  if (r.code !== 0) throw new Error(`enroll failed (${r.code}): ${r.stderr}`);
  return stateDir;
}
