/**
 * What one waiting client costs a bare Node server, as the floor under "memory per waiting robot":
 *
 *   node --import tsx bench/idle-connections.ts [--clients 2000] [--first-answer BYTES]
 *
 * A child process runs a Node server that never answers (every request is parked, like a long poll); this
 * process opens N keep-alive connections, each with one GET carrying a robot-sized bearer token, then reads the
 * child's RSS and heap before and after (after a GC). Once over plain HTTP and once over TLS (P-256 certificate,
 * as the enclave server's), so the difference is what TLS adds per connection. With `--first-answer`, each
 * connection first gets an answer of that many bytes (a robot's bundle at boot), then parks its poll: what a
 * connection keeps of an answer it has already sent.
 *
 * Then twice more with TLS held by a terminator in front (Debian's nginx, and haproxy, when installed: one
 * process each, as a LAN deployment would put them) and the same Node server behind it over plain HTTP. The
 * terminator's RSS counts too: what a waiting robot costs when Node does not hold its TLS connection.
 */
import { execFileSync, fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { rssKiB } from './fleet/stats.js';
import { accepts, freePort, NGINX } from './fleet/steady.js';

const { values } = parseArgs({ options: { clients: { type: 'string', default: '2000' }, 'first-answer': { type: 'string', default: '0' }, child: { type: 'string' } } });

interface Usage {
  rss: number;
  heap: number;
  held: number;
}

if (values.child) {
  // The server side: park every request, report memory when asked.
  const held: http.ServerResponse[] = [];
  const first = Buffer.alloc(Number(values['first-answer']), 'x');
  const park = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url === '/first') res.end(first);
    else held.push(res);
  };
  const [mode, dir] = values.child.split(':') as ['http' | 'https', string];
  const server =
    mode === 'https'
      ? https.createServer({ key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) }, park)
      : http.createServer(park);
  server.keepAliveTimeout = 65_000;
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as { port: number }).port));
  process.on('message', () => {
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    process.send!({ rss: m.rss, heap: m.heapUsed, held: held.length } satisfies Usage);
  });
} else {
  const N = Number(values.clients);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idle-conn-'));
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  fs.writeFileSync(key, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  execFileSync('openssl', ['req', '-x509', '-new', '-key', key, '-subj', '/CN=localhost', '-days', '1', '-out', cert]);
  const ca = new X509Certificate(fs.readFileSync(cert)).toString();

  const measure = async (mode: 'http' | 'https', front?: Front): Promise<{ kibPerConnection: number; heapKibPerConnection: number; held: number; frontKibPerConnection?: number }> => {
    const child = fork(new URL(import.meta.url).pathname, ['--child', `${front ? 'http' : mode}:${dir}`], { execArgv: ['--import', 'tsx', '--expose-gc'] });
    const backendPort = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
    const proxy = front ? await startFront(front, backendPort) : undefined;
    const port = proxy?.port ?? backendPort;
    const usage = () => new Promise<Usage>((resolve) => (child.once('message', (u) => resolve(u as Usage)), child.send('usage')));
    await new Promise((r) => setTimeout(r, 300));
    const before = await usage();
    const frontBefore = proxy ? rssKiB(proxy.process.pid!) : 0;
    const token = 'x'.repeat(340);
    const firstAnswer = Number(values['first-answer']) > 0;
    for (let i = 0; i < N; i++) {
      const agent = mode === 'https' ? new https.Agent({ keepAlive: true, maxSockets: 1, ca }) : new http.Agent({ keepAlive: true, maxSockets: 1 });
      const send = (path: string) => {
        const opts = { host: '127.0.0.1', port, path, headers: { authorization: `Bearer ${token}` }, agent };
        const req = mode === 'https' ? https.request({ ...opts, servername: 'localhost' }) : http.request(opts);
        req.on('error', () => {});
        req.end();
        return req;
      };
      if (firstAnswer) await new Promise((resolve) => send('/first').on('response', (res) => res.resume().on('end', resolve)));
      send('/v1/robot/bundle?wait=30');
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 50));
    }
    let after = await usage();
    for (let i = 0; i < 100 && after.held < N; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await usage();
    }
    const frontAfter = proxy ? rssKiB(proxy.process.pid!) : 0;
    child.kill();
    proxy?.process.kill();
    return {
      kibPerConnection: (after.rss - before.rss) / 1024 / after.held,
      heapKibPerConnection: (after.heap - before.heap) / 1024 / after.held,
      held: after.held,
      ...(proxy ? { frontKibPerConnection: (frontAfter - frontBefore) / after.held } : {}),
    };
  };

  /** A terminator in one process, TLS in front, the parking Node server behind over HTTP/1.1 (keep-alive). */
  type Front = 'nginx' | 'haproxy';
  const startFront = async (front: Front, backendPort: number): Promise<{ port: number; process: ChildProcess }> => {
    const port = await freePort();
    const conf = path.join(dir, `${front}.conf`);
    let proc: ChildProcess;
    if (front === 'nginx') {
      fs.writeFileSync(
        conf,
        `worker_processes 1; master_process off; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx.log warn;
events { worker_connections ${2 * N + 100}; }
http { access_log off; upstream be { server 127.0.0.1:${backendPort}; keepalive 16; }
  server { listen 127.0.0.1:${port} ssl; ssl_certificate ${cert}; ssl_certificate_key ${key};
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 120s; } } }
`,
      );
      proc = spawn(NGINX, ['-c', conf, '-p', dir], { stdio: 'ignore' });
    } else {
      fs.writeFileSync(path.join(dir, 'both.pem'), fs.readFileSync(cert, 'utf8') + fs.readFileSync(key, 'utf8'));
      fs.writeFileSync(
        conf,
        `global\n  maxconn ${2 * N + 100}\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n  timeout http-request 10s\n` +
          `frontend fe\n  bind 127.0.0.1:${port} ssl crt ${dir}/both.pem alpn http/1.1\n  default_backend be\nbackend be\n  server node 127.0.0.1:${backendPort} maxconn ${2 * N + 100}\n`,
      );
      proc = spawn('haproxy', ['-f', conf, '-db'], { stdio: 'ignore' });
    }
    // Ready once it accepts connections.
    for (let i = 0; i < 50 && !(await accepts(port)); i++) await new Promise((r) => setTimeout(r, 100));
    return { port, process: proc };
  };
  const installed = (front: Front) => (front === 'nginx' ? fs.existsSync(NGINX) : spawnSync('sh', ['-c', 'command -v haproxy']).status === 0);

  const plain = await measure('http');
  const tls = await measure('https');
  console.log(`| server | waiting connections | RSS per connection | of which JS heap |`);
  console.log(`|---|---:|---:|---:|`);
  console.log(`| bare Node http | ${plain.held} | ${plain.kibPerConnection.toFixed(1)} KiB | ${plain.heapKibPerConnection.toFixed(1)} KiB |`);
  console.log(`| bare Node https (TLS 1.3, P-256) | ${tls.held} | ${tls.kibPerConnection.toFixed(1)} KiB | ${tls.heapKibPerConnection.toFixed(1)} KiB |`);
  for (const front of ['nginx', 'haproxy'] as const) {
    if (!installed(front)) {
      console.log(`| TLS in ${front}, bare Node http behind | – | ${front} is not installed | |`);
      continue;
    }
    const r = await measure('https', front);
    const sum = r.kibPerConnection + r.frontKibPerConnection!;
    console.log(`| TLS in ${front} (one process), bare Node http behind | ${r.held} | ${sum.toFixed(1)} KiB (${front} ${r.frontKibPerConnection!.toFixed(1)}, Node ${r.kibPerConnection.toFixed(1)}) | ${r.heapKibPerConnection.toFixed(1)} KiB |`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
