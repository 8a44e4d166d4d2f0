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
 */
import { fork } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

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

  const measure = async (mode: 'http' | 'https'): Promise<{ kibPerConnection: number; heapKibPerConnection: number; held: number }> => {
    const child = fork(new URL(import.meta.url).pathname, ['--child', `${mode}:${dir}`], { execArgv: ['--import', 'tsx', '--expose-gc'] });
    const port = await new Promise<number>((resolve) => child.once('message', (p) => resolve(p as number)));
    const usage = () => new Promise<Usage>((resolve) => (child.once('message', (u) => resolve(u as Usage)), child.send('usage')));
    await new Promise((r) => setTimeout(r, 300));
    const before = await usage();
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
    child.kill();
    return {
      kibPerConnection: (after.rss - before.rss) / 1024 / after.held,
      heapKibPerConnection: (after.heap - before.heap) / 1024 / after.held,
      held: after.held,
    };
  };

  const plain = await measure('http');
  const tls = await measure('https');
  console.log(`| server | waiting connections | RSS per connection | of which JS heap |`);
  console.log(`|---|---:|---:|---:|`);
  console.log(`| bare Node http | ${plain.held} | ${plain.kibPerConnection.toFixed(1)} KiB | ${plain.heapKibPerConnection.toFixed(1)} KiB |`);
  console.log(`| bare Node https (TLS 1.3, P-256) | ${tls.held} | ${tls.kibPerConnection.toFixed(1)} KiB | ${tls.heapKibPerConnection.toFixed(1)} KiB |`);
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
