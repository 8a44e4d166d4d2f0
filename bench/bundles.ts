/**
 * Bundle delivery for a fleet: throughput of cached bundles and the cost of long polls.
 *
 *   node --import tsx bench/bundles.ts [--robots 1000] [--seconds 5]
 *
 * One real server (plain HTTP on loopback, so TLS cost is the same for baseline and target: none).
 *   baseline   GET /health (no auth, no database)           autocannon, 50 connections
 *   target     GET /v1/robot/bundle (200, 3 enclaves)       same
 *              GET /v1/robot/bundle + If-None-Match (304)   same
 *   long polls N robots waiting (?wait=60): server CPU while they wait, then the time until every one of
 *              them has its new bundle after one selector binding changes all their bundles.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { assertion, deviceKey } from '../test/helpers/robot.js';
import { startServer } from '../test/helpers/server-process.js';

const { values } = parseArgs({ options: { robots: { type: 'string', default: '1000' }, seconds: { type: 'string', default: '5' } } });
const ROBOTS = Number(values.robots);
const SECONDS = Number(values.seconds);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function call(base: string, method: string, p: string, token?: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(`${base}${p}`, {
      method,
      agent,
      headers: { ...headers, ...(data ? { 'Content-Type': 'application/json' } : {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text ? JSON.parse(text) : null, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function cpuSeconds(base: string): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => http.get(`${base}/metrics`, (res) => { let t = ''; res.on('data', (c) => (t += c)); res.on('end', () => resolve(t)); }).on('error', reject));
  return Number(/^process_cpu_seconds_total (\S+)/m.exec(text)![1]);
}

const cannon = (opts: autocannon.Options) => new Promise<autocannon.Result>((resolve, reject) => autocannon(opts, (err, res) => (err ? reject(err) : resolve(res))));

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bench-bundles-'));
const server = await startServer(['--data-dir', path.join(work, 'data'), '--listen', '127.0.0.1:0', '--insecure-http'], { ENCLAVE_ADMIN_PASSWORD: 'bench-admin-password', ENCLAVE_ROBOT_TOKEN_TTL_SECONDS: '3600', ENCLAVE_TOKEN_TTL_SECONDS: '3600' });
try {
  const base = server.url;
  const admin = (await call(base, 'POST', '/v1/auth/login', undefined, { username: 'admin', password: 'bench-admin-password' })).body.token;
  await call(base, 'POST', '/v1/keystores', admin, { name: 'fleet' });
  await call(base, 'POST', '/v1/keystores/fleet/enclaves:batch', admin, { paths: ['/common/a', '/common/b', '/common/c', '/late'] });
  await call(base, 'POST', '/v1/bindings', admin, { keystore: 'fleet', enclave: '/common/a', selector: { fleet: 'bench' } });
  await call(base, 'POST', '/v1/bindings', admin, { keystore: 'fleet', enclave: '/common/b', selector: { fleet: 'bench' } });
  await call(base, 'POST', '/v1/bindings', admin, { keystore: 'fleet', enclave: '/common/c', selector: { fleet: 'bench' } });
  process.stderr.write(`enrolling ${ROBOTS} robots…\n`);
  const tokens: string[] = [];
  for (let i = 0; i < ROBOTS; i++) {
    const name = `r${i}`;
    await call(base, 'POST', '/v1/robots', admin, { name, labels: { fleet: 'bench' } });
    const t = (await call(base, 'POST', `/v1/robots/${name}/enrollment-tokens`, admin, {})).body.token;
    const key = deviceKey();
    await call(base, 'POST', '/v1/enroll', undefined, { token: t, publicKey: key.publicKeyPem });
    tokens.push((await call(base, 'POST', '/v1/auth/robot', undefined, { assertion: assertion(name, key) })).body.token);
  }
  const first = await call(base, 'GET', '/v1/robot/bundle', tokens[0]);
  const etag = String(first.headers.etag);

  const health = await cannon({ url: `${base}/health`, connections: 50, duration: SECONDS });
  const full = await cannon({ url: `${base}/v1/robot/bundle`, connections: 50, duration: SECONDS, headers: { Authorization: `Bearer ${tokens[0]}` } });
  const notModified = await cannon({ url: `${base}/v1/robot/bundle`, connections: 50, duration: SECONDS, headers: { Authorization: `Bearer ${tokens[0]}`, 'If-None-Match': etag } });

  // Long polls: every robot waits on its current revision.
  const revisions = await Promise.all(tokens.map((t) => call(base, 'GET', '/v1/robot/bundle', t)));
  const pollAgent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  let answered = 0;
  const t0 = { at: 0 };
  const latencies: number[] = [];
  const polls = tokens.map((t, i) => new Promise<void>((resolve, reject) => {
    http.get(`${base}/v1/robot/bundle?wait=60`, { agent: pollAgent, headers: { Authorization: `Bearer ${t}`, 'If-None-Match': String(revisions[i]!.headers.etag) } }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode === 200) latencies.push(Date.now() - t0.at);
        answered++;
        resolve();
      });
    }).on('error', reject);
  }));
  await new Promise((r) => setTimeout(r, 1500));
  const cpu0 = await cpuSeconds(base);
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const idleCpu = (await cpuSeconds(base)) - cpu0;
  const waitingBefore = ROBOTS - answered;
  t0.at = Date.now();
  await call(base, 'POST', '/v1/bindings', admin, { keystore: 'fleet', enclave: '/late', selector: { fleet: 'bench' } });
  await Promise.all(polls);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];

  console.log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model}, node ${process.version}, ${new Date().toISOString()}, ${ROBOTS} robots, bundle ${first.body ? JSON.stringify(first.body).length : 0} bytes`);
  console.log('');
  console.log('| what | req/s (autocannon, 50 conn, ' + SECONDS + ' s) | × GET /health |');
  console.log('|---|---:|---:|');
  console.log(`| GET /health (baseline) | ${health.requests.average.toFixed(0)} | 1.00 |`);
  console.log(`| GET /v1/robot/bundle → 200 (3 enclaves) | ${full.requests.average.toFixed(0)} | ${(full.requests.average / health.requests.average).toFixed(2)} |`);
  console.log(`| GET /v1/robot/bundle + If-None-Match → 304 | ${notModified.requests.average.toFixed(0)} | ${(notModified.requests.average / health.requests.average).toFixed(2)} |`);
  console.log('');
  console.log(`long polls: ${waitingBefore} robots waiting; server CPU while they waited: ${(idleCpu * 1000).toFixed(0)} ms over ${SECONDS} s`);
  console.log(`one selector binding changed all ${ROBOTS} bundles: ${latencies.length} answered 200; after the change p50 ${pct(50)} ms, p99 ${pct(99)} ms, last ${latencies[latencies.length - 1]} ms`);
} finally {
  await server.stop();
  fs.rmSync(work, { recursive: true, force: true });
}
