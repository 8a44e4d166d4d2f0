/**
 * Steady state: keep-alive throughput of one robot's bundle (200) and of "nothing changed" (304), against
 * Debian's nginx serving the same bytes over TLS with the same certificate as the ceiling. The load
 * generator is wrk when installed (C, cheap per request, so the ceiling is nginx's and not the client's),
 * otherwise autocannon.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import autocannon from 'autocannon';

export const NGINX = '/usr/sbin/nginx';

export interface LoadResult {
  tool: string;
  reqPerS: number;
  /** Answers with another status than expected (wrk: non-2xx/3xx; autocannon: non-2xx), and socket errors. */
  bad: number;
  latencyP50Ms?: number;
  latencyP99Ms?: number;
  /** CPU of the target's processes per answer (µs), from /proc. */
  cpuUsPerRequest?: number;
}

export function haveWrk(): boolean {
  return spawnSync('sh', ['-c', 'command -v wrk'], { stdio: 'ignore' }).status === 0;
}

/** Parses wrk's summary: `Requests/sec:`, `Non-2xx or 3xx responses:`, socket errors, latency distribution. */
export function parseWrk(out: string): LoadResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (!rps) throw new Error(`no Requests/sec in wrk output:\n${out}`);
  const non = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const ms = (label: string): number | undefined => {
    const m = new RegExp(`^\\s+${label}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
    if (!m) return undefined;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  return {
    tool: 'wrk',
    reqPerS: Number(rps[1]),
    bad: (non ? Number(non[1]) : 0) + (sock ? sock.slice(1).reduce((s, v) => s + Number(v), 0) : 0),
    latencyP50Ms: ms('50'),
    latencyP99Ms: ms('99'),
  };
}

/** `connections` keep-alive connections hammering `url` for `seconds`. */
export async function load(url: string, headers: Record<string, string>, seconds: number, connections: number): Promise<LoadResult> {
  if (haveWrk()) {
    const args = ['-t2', `-c${connections}`, `-d${seconds}s`, '--latency'];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    // Asynchronous, so that several replicas can be loaded at once (one wrk each).
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn('wrk', [...args, url], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('error', reject);
      child.once('close', (status) => resolve({ status, stdout, stderr }));
    });
    if (r.status !== 0) throw new Error(`wrk failed (${r.status}): ${r.stderr}`);
    return parseWrk(r.stdout);
  }
  const res = await new Promise<autocannon.Result>((resolve, reject) =>
    autocannon({ url, connections, duration: seconds, headers }, (err, result) => (err ? reject(err) : resolve(result))),
  );
  return { tool: 'autocannon', reqPerS: res.requests.average, bad: res.errors + res.timeouts, latencyP50Ms: res.latency.p50, latencyP99Ms: res.latency.p99 };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface Nginx {
  url: string;
  pids(): number[];
  stop(): Promise<void>;
}

/**
 * Debian's nginx as this benchmark's own process: a temp prefix and config, one worker, TLS with `certFile`
 * and `keyFile`, serving `files` (name → bytes) from a temp root. Access logging off and keep-alive without a
 * request cap, as the server under test has neither.
 */
export async function startNginx(dir: string, certFile: string, keyFile: string, files: Record<string, Buffer | string>): Promise<Nginx> {
  const root = path.join(dir, 'www');
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true, mode: 0o700 });
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  for (const [name, bytes] of Object.entries(files)) fs.writeFileSync(path.join(root, name), bytes, { mode: 0o600 });
  const port = await freePort();
  const tmp = (n: string): string => `${n}_temp_path ${path.join(dir, 'tmp', n)};`;
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    [
      // As root, nginx's worker would otherwise drop to `nobody`, which cannot read this 0700 folder.
      process.getuid?.() === 0 ? 'user root;' : '',
      'daemon off;',
      'worker_processes 1;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      `error_log ${path.join(dir, 'error.log')} warn;`,
      'events { worker_connections 4096; }',
      'http {',
      '  access_log off;',
      '  keepalive_requests 10000000;',
      '  keepalive_timeout 65s;',
      '  types { application/json json; }',
      `  ${tmp('client_body')} ${tmp('proxy')} ${tmp('fastcgi')} ${tmp('uwsgi')} ${tmp('scgi')}`,
      '  server {',
      `    listen 127.0.0.1:${port} ssl;`,
      `    ssl_certificate ${certFile};`,
      `    ssl_certificate_key ${keyFile};`,
      `    root ${root};`,
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(NGINX, ['-p', dir, '-c', conf, '-e', path.join(dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${err}${readOr(path.join(dir, 'error.log'))}`);
    if (await accepts(port)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not listen within 10 s: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `https://127.0.0.1:${port}`,
    pids: () => {
      if (child.pid === undefined || child.exitCode !== null) return [];
      const kids = readOr(`/proc/${child.pid}/task/${child.pid}/children`).trim();
      return [child.pid, ...(kids ? kids.split(/\s+/).map(Number) : [])];
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGQUIT');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Whether something accepts TCP connections on the loopback `port` now. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * The same load spread over several replicas at once (`connections` shared out, one generator each, as a
 * balancer would spread them): req/s and bad answers summed, latency that of the slowest replica.
 */
export async function loadAll(urls: string[], headers: Record<string, string>, seconds: number, connections: number): Promise<LoadResult> {
  if (urls.length === 1) return load(urls[0]!, headers, seconds, connections);
  const share = (i: number): number => Math.floor(connections / urls.length) + (i < connections % urls.length ? 1 : 0);
  const parts = await Promise.all(urls.map((u, i) => load(u, headers, seconds, Math.max(1, share(i)))));
  const worst = (pick: (r: LoadResult) => number | undefined): number | undefined => {
    const vs = parts.map(pick).filter((v): v is number => v !== undefined);
    return vs.length ? Math.max(...vs) : undefined;
  };
  return {
    tool: parts[0]!.tool,
    reqPerS: parts.reduce((s, r) => s + r.reqPerS, 0),
    bad: parts.reduce((s, r) => s + r.bad, 0),
    latencyP50Ms: worst((r) => r.latencyP50Ms),
    latencyP99Ms: worst((r) => r.latencyP99Ms),
  };
}
