/**
 * The server under test, as a seam: it returns the URL(s) robots connect to and a function naming every
 * process whose CPU and memory count as "the server". `startServerUnderTest`: one built server (`serve`)
 * process on SQLite; `startReplicas`: several on one PostgreSQL database. The rest of the benchmark spreads
 * robots over `urls` and sums `pids()`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServerUnderTest {
  /** Where robots connect (one per replica; the admin uses the first). */
  urls: string[];
  /** PEM of the CA the robots pin. */
  caPem: string;
  /** The TLS certificate chain and key the server serves (the nginx ceiling serves the same). */
  certFile: string;
  keyFile: string;
  adminUser: string;
  adminPassword: string;
  /** Every process whose CPU and RSS count as the server, now. */
  pids(): number[];
  /** Where the server's own log lines go. */
  logFile: string;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** A fresh folder; the data folder and log go inside. */
  workDir: string;
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
  /** Write the server's V8 CPU profile into this folder when it stops (`node --cpu-prof`). */
  cpuProfDir?: string;
  /** `--workers`: server processes sharing the port (SQLite); their CPU and memory count as the server's. */
  workers?: number;
  /** Extra `node` flags for the server (V8 settings to try, `--trace-gc`, ...). */
  nodeArgs?: string[];
}

/** One server process that has logged its URL. */
interface Started {
  url: string;
  pid(): number | undefined;
  stop(): Promise<void>;
}

/**
 * Compiles the server as `npm ci` does (`tsc -p tsconfig.build.json`), so the process under test is the one
 * `npm start` runs, from the sources as they are now: under `tsx` it would carry the loader's own thread and
 * transpile cache (tens of MB of the memory measured) and differ from production in what it executes.
 */
export function buildServer(): void {
  const tsc = spawnSync(process.execPath, [path.join(REPO, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: REPO, encoding: 'utf8' });
  if (tsc.status !== 0) throw new Error(`building the server failed:\n${tsc.stdout}${tsc.stderr}`);
}

/**
 * Spawns the built server (`bin/enclave-server.js serve`, as `npm start`) and waits for its "listening" line.
 * Its log goes to a file (not a pipe to this process): reading thousands of request lines would cost the
 * benchmark CPU and a full pipe would stall the server.
 */
async function startProcess(dataDir: string, logFile: string, env: NodeJS.ProcessEnv, opts: ServerOptions): Promise<Started> {
  const out = fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...(opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
      ...(opts.nodeArgs ?? []),
      path.join(REPO, 'bin/enclave-server.js'), 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0',
      ...(opts.workers && opts.workers > 1 ? ['--workers', String(opts.workers)] : []),
    ],
    { cwd: REPO, env: { ...process.env, ENCLAVE_ADMIN_PASSWORD_FILE: '', ...env, ...opts.env }, stdio: ['ignore', out, out] },
  );
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async (): Promise<void> => {
    if (!gone) child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };

  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  let url: string | undefined;
  // With workers, robots must not all land on the first one to listen.
  let ready = !(opts.workers && opts.workers > 1);
  while (!url || !ready) {
    if (gone) throw new Error(`server exited before listening:\n${tail(logFile)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not listen within ${opts.startTimeoutMs ?? 60_000} ms:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
    for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
      if (line.includes('"msg":"all workers listening"')) ready = true;
      if (!line.includes('"msg":"listening"')) continue;
      try {
        url = (JSON.parse(line) as { url?: string }).url;
      } catch {
        // a line still being written
      }
    }
  }
  return { url, pid: () => (gone ? undefined : child.pid), stop };
}

/** The process and, when it runs workers, their processes (the children the kernel lists for it). */
function withChildren(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return [pid, ...fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)];
  } catch {
    return [pid];
  }
}

/** One real server over HTTPS with its self-generated TLS material and SQLite, on a free loopback port. */
export async function startServerUnderTest(opts: ServerOptions): Promise<ServerUnderTest> {
  const dataDir = path.join(opts.workDir, 'data');
  const logFile = path.join(opts.workDir, 'server.log');
  const adminPassword = randomBytes(18).toString('base64url');
  const p = await startProcess(dataDir, logFile, { ENCLAVE_ADMIN_PASSWORD: adminPassword }, opts);
  const tlsDir = path.join(dataDir, 'tls');
  return {
    urls: [p.url],
    caPem: fs.readFileSync(path.join(tlsDir, 'ca.cert.pem'), 'utf8'),
    certFile: path.join(tlsDir, 'server.cert.pem'),
    keyFile: path.join(tlsDir, 'server.key.pem'),
    adminUser: 'admin',
    adminPassword,
    pids: () => withChildren(p.pid()),
    logFile,
    stop: () => p.stop(),
  };
}

export interface ReplicaOptions extends ServerOptions {
  replicas: number;
  /** The database every replica shares, without its password. */
  databaseUrl: string;
  databasePassword: string;
}

/**
 * `replicas` server processes on one PostgreSQL database, as a replicated deployment runs them: each its own
 * data folder and port, all reading the same master-key, token-secret and database-password files. They serve
 * one TLS certificate (replica 0's self-generated one, passed to the others with --tls-cert/--tls-key), as
 * replicas behind one balancer address do, so a robot pins one CA whichever replica it reaches. Replica 0
 * starts first (it makes that certificate and runs the migrations); the others start together after it.
 */
export async function startReplicas(opts: ReplicaOptions): Promise<ServerUnderTest> {
  const secrets = path.join(opts.workDir, 'secrets');
  fs.mkdirSync(secrets, { recursive: true, mode: 0o700 });
  const file = (name: string, content: string): string => {
    const f = path.join(secrets, name);
    fs.writeFileSync(f, content, { mode: 0o600 });
    return f;
  };
  const adminPassword = randomBytes(18).toString('base64url');
  const env: NodeJS.ProcessEnv = {
    ENCLAVE_DATABASE_URL: opts.databaseUrl,
    ENCLAVE_MASTER_KEY_FILE: file('master.key', randomBytes(32).toString('hex')),
    ENCLAVE_TOKEN_SECRET_FILE: file('token.secret', randomBytes(32).toString('hex')),
    ENCLAVE_ADMIN_PASSWORD: adminPassword,
    ...(opts.databasePassword ? { ENCLAVE_DATABASE_PASSWORD_FILE: file('database.password', opts.databasePassword) } : {}),
  };
  const dir = (r: number): string => path.join(opts.workDir, `replica-${r}`);
  const started: Started[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(started.map((s) => s.stop()));
  };
  try {
    started.push(await startProcess(dir(0), path.join(opts.workDir, 'replica-0.log'), env, opts));
    const tlsDir = path.join(dir(0), 'tls');
    const tlsEnv = { ...env, ENCLAVE_TLS_CERT: path.join(tlsDir, 'server.cert.pem'), ENCLAVE_TLS_KEY: path.join(tlsDir, 'server.key.pem') };
    const rest = await Promise.allSettled(
      Array.from({ length: opts.replicas - 1 }, (_, i) => startProcess(dir(i + 1), path.join(opts.workDir, `replica-${i + 1}.log`), tlsEnv, opts)),
    );
    for (const r of rest) if (r.status === 'fulfilled') started.push(r.value);
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return {
      urls: started.map((s) => s.url),
      caPem: fs.readFileSync(path.join(tlsDir, 'ca.cert.pem'), 'utf8'),
      certFile: tlsEnv.ENCLAVE_TLS_CERT,
      keyFile: tlsEnv.ENCLAVE_TLS_KEY,
      adminUser: 'admin',
      adminPassword,
      pids: () => started.map((s) => s.pid()).filter((x): x is number => x !== undefined),
      logFile: path.join(opts.workDir, 'replica-0.log'),
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
