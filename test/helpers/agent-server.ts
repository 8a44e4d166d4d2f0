/**
 * Starts the real `enclave-server` as a child process and drives it through its HTTP API only
 * (docs/api.md): admin login, keystores (create, import), enclaves, robots, enrollment tokens, bindings,
 * rotate, revoke, audit. Every agent test that needs a server uses this one: there is no stand-in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { join } from 'node:path';
import { HttpClient, parseJson, statusError } from '../../client/common/http.js';
import { REPO } from './agent-proc.js';
import { freshDatabase, TEST_STORE } from './postgres.js';

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
  /** SIGTERM (or `signal`) and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Runs `server/main.ts serve` on 127.0.0.1 and waits for its "listening" log line. The port is `port`, else, with
 * `restartable`, one the test can start a server on again after stopping it (see `stablePort`), else any.
 */
export async function startServer(opts: {
  dataDir: string;
  port?: number;
  restartable?: boolean;
  insecureHttp?: boolean;
  env?: NodeJS.ProcessEnv;
}): Promise<RealServer> {
  if (opts.port === undefined && opts.restartable) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startServer({ ...opts, port: stablePort() });
      } catch (e) {
        if (attempt === 5 || !/EADDRINUSE/.test(String(e))) throw e;
      }
    }
  }
  const args = ['--import', 'tsx', SERVER_MAIN, 'serve', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${opts.port ?? 0}`];
  if (opts.insecureHttp) args.push('--insecure-http');
  const database = TEST_STORE === 'postgres' ? { ENCLAVE_DATABASE_URL: await databaseFor(opts.dataDir) } : {};
  const proc = spawn(process.execPath, args, {
    cwd: REPO,
    // Load shedding follows this machine's load, which agent tests do not control (test/overload.test.ts covers it).
    env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: ADMIN_PASSWORD, ENCLAVE_OVERLOAD_LAG_MS: '0', ENCLAVE_OVERLOAD_QUEUE_MS: '0', ...database, ...opts.env },
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
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await exited;
    },
  };
}

/**
 * On the PostgreSQL half of the store matrix a data folder gets its own database, the same one again when a
 * test restarts the server on that folder (the throw-away cluster goes with its databases at the end).
 */
async function databaseFor(dataDir: string): Promise<string> {
  const file = join(dataDir, '.test-database-url');
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8');
  const { url } = await freshDatabase('agent');
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, url);
  return url;
}

/** The admin side of the API, as an admin user. */
export class Admin {
  private constructor(
    private readonly http: HttpClient,
    private readonly token: string,
    private readonly url: string,
    private readonly ca: string | undefined,
  ) {}

  static async login(server: { url: string; caFile?: string }, username = 'admin', password = ADMIN_PASSWORD): Promise<Admin> {
    const ca = server.caFile ? fs.readFileSync(server.caFile, 'utf8') : undefined;
    const http = new HttpClient(server.url, ca);
    const res = await http.request({ method: 'POST', path: 'v1/auth/login', json: { username, password }, timeoutMs: 15_000 });
    if (res.status !== 200) throw statusError(res, 'login');
    return new Admin(http, (parseJson(res) as { token: string }).token, server.url, ca);
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

  /** `policy`: plain policy XML, or `{ policyArchive, policyFile? }` (a base64 .tar.gz policy folder). */
  createEnclave(ks: string, path: string, policy?: string | { policyArchive: string; policyFile?: string }): Promise<unknown> {
    const body = policy === undefined ? { path } : typeof policy === 'string' ? { path, policy } : { path, ...policy };
    return this.call('POST', `/v1/keystores/${ks}/enclaves`, body);
  }

  getEnclave<T = EnclaveDetail>(ks: string, path: string): Promise<T> {
    return this.call<T>('GET', `/v1/keystores/${ks}/enclaves/${path.replace(/^\//, '')}`);
  }

  /** `POST /v1/keystores/{ks}/import` with an sros2 keystore `.tar.gz` (raw body, not JSON). */
  importKeystore(ks: string, archive: Buffer): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        new URL(`v1/keystores/${ks}/import`, this.url.endsWith('/') ? this.url : `${this.url}/`),
        {
          method: 'POST',
          ca: this.ca,
          headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/gzip', 'content-length': archive.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode === 201) resolve(JSON.parse(text));
            else reject(new Error(`import ${ks}: HTTP ${res.statusCode}: ${text}`));
          });
        },
      );
      req.on('error', reject);
      req.end(archive);
    });
  }

  createRobot(name: string, labels: Record<string, string> = {}): Promise<unknown> {
    return this.call('POST', '/v1/robots', { name, labels });
  }

  setLabels(name: string, labels: Record<string, string>): Promise<unknown> {
    return this.call('PATCH', `/v1/robots/${name}`, { labels });
  }

  async enrollmentToken(robot: string): Promise<string> {
    return (await this.call<{ token: string }>('POST', `/v1/robots/${robot}/enrollment-tokens`, {})).token;
  }

  async bind(keystore: string, enclave: string, robot: string): Promise<string> {
    return String((await this.call<{ id: string | number }>('POST', '/v1/bindings', { keystore, enclave, robot })).id);
  }

  async bindSelector(keystore: string, enclave: string, selector: Record<string, string>): Promise<string> {
    return String((await this.call<{ id: string | number }>('POST', '/v1/bindings', { keystore, enclave, selector })).id);
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

  /** The robot's last report (`GET /v1/robots/{name}` → `report`), or null before the first. */
  async report(robot: string): Promise<RobotReport | null> {
    return (await this.getRobot<{ report: RobotReport | null }>(robot)).report;
  }

  /** Successful device logins of `robot` (audit action `auth.robot`). */
  async robotLogins(robot: string): Promise<number> {
    const { entries } = await this.call<{ entries: { actor: string; result: string }[] }>(
      'GET',
      `/v1/audit?actor=${encodeURIComponent(robot)}&action=auth.robot&limit=10000`,
    );
    return entries.filter((e) => e.actor === robot && e.result !== 'failure').length;
  }
}

export interface EnclaveDetail {
  path: string;
  status: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  certificate: string;
  fingerprintSha256: string;
}

export interface RobotReport {
  revision: string | null;
  filesystem: string;
  clockSkewMs: number;
  agentVersion: string;
  enclaves: { keystore: string; path: string; notAfter: string }[];
  reportedAt?: string;
}

/** Polls the robot's report until `ok(report)` holds. */
export async function waitForReport(admin: Admin, robot: string, ok: (r: RobotReport) => boolean = () => true, timeoutMs = 5000): Promise<RobotReport> {
  const start = Date.now();
  let last: RobotReport | null = null;
  while (Date.now() - start < timeoutMs) {
    last = await admin.report(robot);
    if (last && ok(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no matching report from ${robot} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

/**
 * A port below the kernel's ephemeral range. Port 0 would come from that range, from which every outgoing
 * connection (a PostgreSQL client's, say) also takes its local port: while a test's server is down, such a
 * connection can take the port and the restart fails with EADDRINUSE (CI saw it). A port below the range is
 * taken only by an explicit bind, which a start on it retries with another (`startServer` with `restartable`).
 */
function stablePort(): number {
  const [low] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const floor = 10_000;
  return low! > floor + 1000 ? floor + randomInt(low! - floor) : 0;
}

/** A real server plus an admin session on it, with a keystore per name in `keystores`. */
export interface ServerFixture {
  server: RealServer;
  admin: Admin;
  /** Stops the server (admin session closed); `restart` starts it again on the same data folder and port. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  restart(env?: NodeJS.ProcessEnv): Promise<void>;
}

export async function serverFixture(opts: { dataDir: string; env?: NodeJS.ProcessEnv }): Promise<ServerFixture> {
  const fx: ServerFixture = {
    server: await startServer({ ...opts, restartable: true }),
    admin: undefined as unknown as Admin,
    async stop(signal) {
      fx.admin.close();
      await fx.server.stop(signal);
    },
    async restart(env = opts.env) {
      fx.server = await startServer({ dataDir: opts.dataDir, port: fx.server.port, env });
      fx.admin = await Admin.login(fx.server);
    },
  };
  fx.admin = await Admin.login(fx.server);
  return fx;
}

/** End of an agent test file: agents killed, admin session closed, server stopped, its folders removed. */
export async function tearDownAgentTest(t: { procs: { child: ChildProcess }[]; admin?: Admin; server?: RealServer; dirs: string[] }): Promise<void> {
  for (const p of t.procs) p.child.kill('SIGKILL');
  t.admin?.close();
  await t.server?.stop();
  for (const d of t.dirs) fs.rmSync(d, { recursive: true, force: true });
}
