/**
 * What a delivery to a waiting client costs bare Node, by how the client waits (the floor under a rotation's
 * fan-out, without any of the server's own work):
 *
 *   node --import tsx bench/push-vs-poll.ts [--clients 2000] [--rounds 10] [--bytes 5500]
 *
 * A child process runs an HTTPS server (P-256 certificate, as the enclave server's); this process opens one
 * keep-alive connection per client. Each round the server sends every client `--bytes` bytes (a gzipped
 * bundle), 24 clients per turn of its loop as the fan-out does, and the round ends when every client has them:
 *   poll    each client has a request parked; the server answers it, the client sends its next request at
 *           once, and the round ends when all are parked again (a long poll, as the agent does today)
 *   stream  each client holds one response; the server writes a chunk to it (a streamed response)
 * It prints the server's and this process's CPU per delivery (from `process.cpuUsage`) and the wall time per round.
 */
import { execFileSync, fork } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { ServerResponse } from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

type Mode = 'poll' | 'stream';
type Msg = { t: 'port'; port: number } | { t: 'parked' } | { t: 'cpu'; us: number };

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '10' },
    bytes: { type: 'string', default: '5500' },
    child: { type: 'string' },
  },
});
const N = Number(values.clients);
const BODY = randomBytes(Number(values.bytes));
const SLICE = 24;

if (values.child) {
  const [mode, dir] = values.child.split(':') as [Mode, string];
  const held: ServerResponse[] = [];
  const server = https.createServer({ key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) }, (_req, res) => {
    if (mode === 'stream') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.flushHeaders();
    }
    held.push(res);
    if (held.length === N) process.send!({ t: 'parked' } satisfies Msg);
  });
  server.keepAliveTimeout = 120_000;
  server.listen(0, '127.0.0.1', () => process.send!({ t: 'port', port: (server.address() as { port: number }).port } satisfies Msg));
  process.on('message', (m: { t: 'round' | 'cpu' }) => {
    if (m.t === 'cpu') {
      const c = process.cpuUsage();
      process.send!({ t: 'cpu', us: c.user + c.system } satisfies Msg);
      return;
    }
    // A poll's answer takes its response out of `held`; its next request puts a new one in.
    const list = mode === 'poll' ? held.splice(0) : held;
    let i = 0;
    const step = () => {
      for (const end = Math.min(i + SLICE, list.length); i < end; i++) {
        const res = list[i]!;
        if (mode === 'poll') {
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
          res.end(BODY);
        } else res.write(BODY);
      }
      if (i < list.length) setImmediate(step);
    };
    step();
  });
} else {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'push-vs-poll-'));
  fs.writeFileSync(path.join(dir, 'key.pem'), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  execFileSync('openssl', ['req', '-x509', '-new', '-key', path.join(dir, 'key.pem'), '-subj', '/CN=localhost', '-days', '1', '-out', path.join(dir, 'cert.pem')]);
  const ca = fs.readFileSync(path.join(dir, 'cert.pem'));

  const run = async (mode: Mode): Promise<string> => {
    const child = fork(process.argv[1]!, ['--child', `${mode}:${dir}`, '--clients', String(N), '--bytes', String(BODY.length)], { execArgv: process.execArgv });
    const next = <T extends Msg['t']>(t: T) =>
      new Promise<Extract<Msg, { t: T }>>((resolve) => {
        const on = (m: Msg) => {
          if (m.t !== t) return;
          child.off('message', on);
          resolve(m as Extract<Msg, { t: T }>);
        };
        child.on('message', on);
      });
    const { port } = await next('port');
    const agent = new https.Agent({ keepAlive: true, maxSockets: N, ca });
    let got = 0;
    let stopping = false;
    let roundDone = () => {};
    const delivered = () => {
      if (++got === N) roundDone();
    };
    const get = (p: string, onResponse: (res: import('node:http').IncomingMessage) => void) =>
      https.get({ host: '127.0.0.1', port, path: p, agent, servername: 'localhost' }, onResponse).on('error', (err) => {
        if (stopping) return;
        console.error(`client: ${err.message}`);
        process.exit(1);
      });
    const poll = () =>
      get('/poll', (res) => {
        res.resume();
        res.on('end', () => {
          delivered();
          poll();
        });
      });
    const stream = () =>
      get('/stream', (res) => {
        let bytes = 0;
        res.on('data', (d: Buffer) => {
          for (bytes += d.length; bytes >= BODY.length; bytes -= BODY.length) delivered();
        });
      });
    const parked = next('parked');
    for (let i = 0; i < N; i++) (mode === 'poll' ? poll : stream)();
    await parked;

    const rounds = Number(values.rounds);
    const cpu = async () => (child.send({ t: 'cpu' }), (await next('cpu')).us);
    const server0 = await cpu();
    const client0 = process.cpuUsage();
    const wall0 = performance.now();
    for (let r = 0; r < rounds; r++) {
      got = 0;
      const done = new Promise<void>((resolve) => (roundDone = resolve));
      const reparked = mode === 'poll' ? next('parked') : undefined;
      child.send({ t: 'round' });
      await done;
      await reparked;
    }
    const wallMs = (performance.now() - wall0) / rounds;
    const serverUs = ((await cpu()) - server0) / (rounds * N);
    const c = process.cpuUsage(client0);
    const clientUs = (c.user + c.system) / (rounds * N);
    stopping = true;
    agent.destroy();
    child.kill();
    return `| ${mode} | ${serverUs.toFixed(1)} | ${clientUs.toFixed(1)} | ${wallMs.toFixed(0)} ms |`;
  };

  console.log(`${N} clients, ${values.rounds} rounds of ${BODY.length} bytes each, ${os.cpus().length} cores`);
  console.log('| clients wait by | server µs/delivery | client µs/delivery | wall per round |');
  console.log('|---|---:|---:|---:|');
  for (const mode of ['poll', 'stream', 'poll', 'stream'] as const) console.log(await run(mode));
  fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
