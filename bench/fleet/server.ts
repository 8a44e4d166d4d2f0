/**
 * The server under test, as a seam: `startServerUnderTest` returns the URL(s) robots connect to and a
 * function naming every process whose CPU and memory count as "the server". Today that is one
 * `server/main.ts serve` process; a later multi-process or replicated server returns several URLs and pids
 * here and nothing else in the benchmark changes (robots spread over `urls`, accounting sums `pids()`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface ServerUnderTest {
  /** Where robots connect (one per replica/listener). */
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
}

/**
 * One real server over HTTPS with its self-generated TLS material, on a free loopback port. Its log goes to
 * a file (not a pipe to this process): reading thousands of request lines would cost the benchmark CPU and
 * a full pipe would stall the server.
 */
export async function startServerUnderTest(opts: ServerOptions): Promise<ServerUnderTest> {
  const dataDir = path.join(opts.workDir, 'data');
  const logFile = path.join(opts.workDir, 'server.log');
  const adminPassword = randomBytes(18).toString('base64url');
  const out = fs.openSync(logFile, 'a');
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...(opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : []),
      '--import', 'tsx', path.join(REPO, 'server/main.ts'), 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0',
    ],
    {
      cwd: REPO,
      env: { ...process.env, ENCLAVE_ADMIN_PASSWORD: adminPassword, ENCLAVE_ADMIN_PASSWORD_FILE: '', ...opts.env },
      stdio: ['ignore', out, out],
    },
  );
  fs.closeSync(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));

  const deadline = Date.now() + (opts.startTimeoutMs ?? 60_000);
  let url: string | undefined;
  while (!url) {
    if (gone) throw new Error(`server exited before listening:\n${tail(logFile)}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not listen within ${opts.startTimeoutMs ?? 60_000} ms:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
    for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.includes('"msg":"listening"')) continue;
      try {
        url = (JSON.parse(line) as { url?: string }).url;
      } catch {
        // a line still being written
      }
    }
  }
  const tlsDir = path.join(dataDir, 'tls');
  return {
    urls: [url],
    caPem: fs.readFileSync(path.join(tlsDir, 'ca.cert.pem'), 'utf8'),
    certFile: path.join(tlsDir, 'server.cert.pem'),
    keyFile: path.join(tlsDir, 'server.key.pem'),
    adminUser: 'admin',
    adminPassword,
    pids: () => (gone || child.pid === undefined ? [] : [child.pid]),
    logFile,
    async stop() {
      if (!gone) child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
