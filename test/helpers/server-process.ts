import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { REPO } from './tools.js';

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  logs: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** Starts the real server (TypeScript source through tsx) and waits for its "listening" log line. */
export async function startServer(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 20_000): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'server', 'main.ts'), ...args], {
    cwd: REPO,
    // Load shedding reacts to this machine's load, which tests do not control: off unless a test asks for it
    // (test/overload.test.ts drives it with a saturated loop it makes itself).
    env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: '', ENCLAVE_ADMIN_PASSWORD_FILE: '', ENCLAVE_OVERLOAD_LAG_MS: '0', ENCLAVE_OVERLOAD_QUEUE_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c) => (out += String(c)));
  child.stderr!.on('data', (c) => (out += String(c)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), timeoutMs);
    const check = () => {
      const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line).url);
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    child,
    logs: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * An HTTPS request pinning the given CA (no fallback to the system store, never unverified), or a plain HTTP
 * one to a server started with --insecure-http. The body is parsed when it is JSON, else kept as text.
 */
export function pinnedRequest(
  url: string,
  ca: string | undefined,
  opts: { method?: string; body?: unknown; token?: string; servername?: string } = {},
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = (url.startsWith('http:') ? http : https).request(
      url,
      {
        method: opts.method ?? 'GET',
        ...(url.startsWith('http:') ? {} : { ca, servername: opts.servername }),
        headers: {
          ...(data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {}),
          ...(opts.token ? { Authorization: `Bearer ${opts.token}` } : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            /* not JSON */
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

export const readCa = (dataDir: string) => fs.readFileSync(path.join(dataDir, 'tls', 'ca.cert.pem'), 'utf8');
