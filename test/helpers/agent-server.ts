/**
 * Starts the real `enclave-server` as a child process and drives it through the contract's HTTP API only
 * (CONTRACT.md "HTTP API"): admin login, keystores, enclaves, robots, enrollment tokens, bindings, rotate,
 * revoke. Used by agent-e2e.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { HttpClient, parseJson, statusError } from '../../client/common/http.js';
import { REPO } from './agent-proc.js';

export const SERVER_MAIN = join(REPO, 'server/main.ts');
export const ADMIN_PASSWORD = 'agent-e2e-admin-password-123';

export function serverBuilt(): boolean {
  return fs.existsSync(SERVER_MAIN);
}

export interface RealServer {
  url: string;
  port: number;
  /** The CA the agent pins (undefined with --insecure-http). */
  caFile: string | undefined;
  dataDir: string;
  proc: ChildProcess;
  output(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<void>;
}

/** Runs `server/main.ts serve` on 127.0.0.1 (port 0 = any) and waits for its "listening" log line. */
export async function startServer(opts: { dataDir: string; port?: number; insecureHttp?: boolean; env?: NodeJS.ProcessEnv }): Promise<RealServer> {
  const args = ['--import', 'tsx', SERVER_MAIN, 'serve', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${opts.port ?? 0}`];
  if (opts.insecureHttp) args.push('--insecure-http');
  const proc = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: ADMIN_PASSWORD, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 30 s:\n${out}`)), 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      for (const line of out.split('\n')) {
        if (!line.includes('"msg":"listening"')) continue;
        try {
          const u = (JSON.parse(line) as { url?: string }).url;
          if (u) {
            clearTimeout(timer);
            resolve(u);
            return;
          }
        } catch {
          // partial line
        }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${out}`));
    });
  });
  return {
    url,
    port: Number(new URL(url).port),
    caFile: opts.insecureHttp ? undefined : join(opts.dataDir, 'tls/ca.cert.pem'),
    dataDir: opts.dataDir,
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** The admin side of the API, as an admin user. */
export class Admin {
  private constructor(
    private readonly http: HttpClient,
    private readonly token: string,
  ) {}

  static async login(server: { url: string; caFile?: string }, username = 'admin', password = ADMIN_PASSWORD): Promise<Admin> {
    const http = new HttpClient(server.url, server.caFile ? fs.readFileSync(server.caFile, 'utf8') : undefined);
    const res = await http.request({ method: 'POST', path: 'v1/auth/login', json: { username, password }, timeoutMs: 15_000 });
    if (res.status !== 200) throw statusError(res, 'login');
    return new Admin(http, (parseJson(res) as { token: string }).token);
  }

  close(): void {
    this.http.close();
  }

  async call<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, json?: unknown, expect = [200, 201, 204]): Promise<T> {
    const res = await this.http.request({
      method,
      path: path.replace(/^\//, ''),
      json,
      headers: { authorization: `Bearer ${this.token}` },
      timeoutMs: 30_000,
    });
    if (!expect.includes(res.status)) throw statusError(res, `${method} ${path}`);
    return parseJson(res) as T;
  }

  createKeystore(name: string, extra: Record<string, unknown> = {}): Promise<unknown> {
    return this.call('POST', '/v1/keystores', { name, ...extra });
  }

  createEnclave(ks: string, path: string, policy?: string): Promise<unknown> {
    return this.call('POST', `/v1/keystores/${ks}/enclaves`, policy === undefined ? { path } : { path, policy });
  }

  createRobot(name: string, labels: Record<string, string> = {}): Promise<unknown> {
    return this.call('POST', '/v1/robots', { name, labels });
  }

  async enrollmentToken(robot: string): Promise<string> {
    return (await this.call<{ token: string }>('POST', `/v1/robots/${robot}/enrollment-tokens`, {})).token;
  }

  async bind(keystore: string, enclave: string, robot: string): Promise<string> {
    return String((await this.call<{ id: string | number }>('POST', '/v1/bindings', { keystore, enclave, robot })).id);
  }

  unbind(id: string): Promise<unknown> {
    return this.call('DELETE', `/v1/bindings/${id}`);
  }

  rotate(ks: string, path: string): Promise<unknown> {
    return this.call('POST', `/v1/keystores/${ks}/enclaves/${path.replace(/^\//, '')}/rotate`, {});
  }

  revoke(ks: string, path: string): Promise<unknown> {
    return this.call('POST', `/v1/keystores/${ks}/enclaves/${path.replace(/^\//, '')}/revoke`, {});
  }

  deleteRobot(name: string): Promise<unknown> {
    return this.call('DELETE', `/v1/robots/${name}`);
  }

  getRobot<T = Record<string, unknown>>(name: string): Promise<T> {
    return this.call<T>('GET', `/v1/robots/${name}`);
  }
}
