/**
 * Per-robot identity issuance throughput (issue 14), against baselines measured in the same run.
 *
 *   npm run bench:identities -- --robots 10000 --enclaves 2 [--concurrency 1]
 *
 * One process, the real services over the test store (a real SQLite file; PostgreSQL with ENCLAVE_TEST_STORE=postgres),
 * the app `createApp` builds, as the tests use it:
 *   raw signing   server/pki issueCertificate() for robots × enclaves fresh public keys: the certificate alone
 *                 (DER + ECDSA signature), no CSR, no database
 *   shared        the same count of shared-mode enclaves created through EnclavesService.createMany (batches
 *                 of 1000): key, certificate, signed permissions, sealing, rows, audit: what shared mode does
 *                 per enclave, and it gives every robot the same key
 *   per-robot     IdentitiesService.issue() for every robot × enclave, with a CSR the agent's own builder
 *                 (client/agent/csr.ts) made beforehand (not timed): binding check, rate limit, CSR parse and
 *                 signature check, fresh-key check, certificate, identity row, audit entry, change event;
 *                 with --concurrency C, C requests in flight at a time (robots booting together), which lets
 *                 the store commit the ones that arrive at once together (Store.grouped); 1: one after another
 * Prints machine, time and load, then a Markdown table with certificates/s and ratios to both baselines.
 */
import crypto from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import request from 'supertest';
import { Caller } from '../server/acl/caller.js';
import { generateKeyPair, issueCertificate } from '../server/pki/index.js';
import { buildCsr, newIdentityKey } from '../client/agent/csr.js';
import { bearer, makeTestApp } from '../test/helpers/app.js';

const { values } = parseArgs({
  options: { robots: { type: 'string', default: '10000' }, enclaves: { type: 'string', default: '2' }, concurrency: { type: 'string', default: '1' } },
});
const ROBOTS = Number(values.robots);
const ENCLAVES = Number(values.enclaves);
const CONCURRENCY = Number(values.concurrency);
if (![ROBOTS, ENCLAVES, CONCURRENCY].every((v) => Number.isInteger(v) && v >= 1)) {
  console.error('bench:identities: --robots, --enclaves and --concurrency must be whole numbers ≥ 1');
  process.exit(2);
}
const N = ROBOTS * ENCLAVES;
const seconds = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;
const progress = (what: string, done: number, total: number): void => {
  if (process.stderr.isTTY) process.stderr.write(`\r${what}: ${done}/${total}   `);
  else if (done === total || done % Math.max(1, Math.floor(total / 4)) === 0) process.stderr.write(`${what}: ${done}/${total}\n`);
};

const ctx = await makeTestApp({ crlBatchMs: 3_600_000 });
try {
  const s = ctx.services;
  const admin = new Caller({ kind: 'user', name: 'admin', role: 'admin' }, []);
  const auth = bearer(await ctx.adminToken());
  const app = () => request(ctx.app);
  const paths = Array.from({ length: ENCLAVES }, (_, j) => `/bench/enclave_${j}`);
  await app().post('/v1/keystores').set(auth).send({ name: 'per_robot', identityMode: 'per-robot' }).expect(201);
  await app().post('/v1/keystores').set(auth).send({ name: 'shared' }).expect(201);
  await app().post('/v1/keystores/per_robot/enclaves:batch').set(auth).send({ paths }).expect(201);
  // One selector binding per enclave, as a fleet would bind it: every issuance checks it like the bundle does.
  for (const enclave of paths) await app().post('/v1/bindings').set(auth).send({ keystore: 'per_robot', enclave, selector: { fleet: 'bench' } }).expect(201);
  const robots = Array.from({ length: ROBOTS }, (_, i) => `bench_robot_${i}`);
  for (const [i, name] of robots.entries()) {
    await s.robots.create(admin, name, { fleet: 'bench' });
    // The device key enrollment would record (enrollment itself is measured by the fleet benchmark).
    const device = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    await ctx.store.tx((r) => r.robots.setKey(name, { publicKey: device, keyId: `bench-${i}`, agentVersion: null }, new Date().toISOString()));
    if ((i + 1) % 2000 === 0 || i + 1 === ROBOTS) progress('robots', i + 1, ROBOTS);
  }

  // What the agents send: a fresh key and CSR per robot and enclave (made by the agent's code, not timed).
  const t0csr = process.hrtime.bigint();
  const csrs = robots.map((name, i) => {
    if ((i + 1) % 2000 === 0 || i + 1 === ROBOTS) progress('agent keys and CSRs', (i + 1) * ENCLAVES, N);
    return paths.map((p) => buildCsr(newIdentityKey().privateKey, p));
  });
  const agentSide = N / seconds(t0csr);

  // Baseline 1: raw certificate signing for fresh keys.
  const ca = generateKeyPair();
  const now = new Date();
  const caCert = issueCertificate({ subjectCN: 'sros2CA', publicKeyPem: ca.publicKeyPem, issuer: { keyPem: ca.privateKeyPem }, notBefore: now, notAfter: new Date(now.getTime() + 3650 * 86400_000), profile: 'ca' });
  const pubs = Array.from({ length: N }, () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string);
  const notAfter = new Date(now.getTime() + 365 * 86400_000);
  const t0raw = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    issueCertificate({ subjectCN: paths[i % ENCLAVES]!, publicKeyPem: pubs[i]!, issuer: { certPem: caCert, keyPem: ca.privateKeyPem }, notBefore: now, notAfter, profile: 'enclave' });
  }
  const raw = N / seconds(t0raw);

  // Baseline 2: shared mode, the same number of enclaves.
  const t0shared = process.hrtime.bigint();
  for (let done = 0; done < N; done += 1000) {
    const batch = Array.from({ length: Math.min(1000, N - done) }, (_, k) => `/shared/robot_${done + k}`);
    await s.enclaves.createMany(admin, 'shared', batch, {});
    progress('shared enclaves', done + batch.length, N);
  }
  const shared = N / seconds(t0shared);

  // Per-robot issuance.
  const t0issue = process.hrtime.bigint();
  const serials = new Set<string>();
  let next = 0;
  const asker = async (): Promise<void> => {
    for (let k = next++; k < N; k = next++) {
      const i = Math.floor(k / ENCLAVES);
      const j = k % ENCLAVES;
      const robot = { kind: 'robot' as const, name: robots[i]!, keyId: `bench-${i}` };
      serials.add((await s.identities.issue(robot, { keystore: 'per_robot', enclave: paths[j]!, csr: csrs[i]![j]! })).serial);
      if (serials.size % (2000 * ENCLAVES) === 0 || serials.size === N) progress('per-robot identities', serials.size, N);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, asker));
  const perRobot = N / seconds(t0issue);
  if (serials.size !== N) throw new Error(`expected ${N} distinct serials, got ${serials.size}`);

  const f = (x: number) => x.toFixed(0);
  const cpu = os.cpus();
  console.log(`machine: ${cpu.length} × ${cpu[0]?.model ?? 'cpu'}, node ${process.version}, ${new Date().toISOString()}, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`work: ${ROBOTS} robots × ${ENCLAVES} enclaves = ${N} certificates (${serials.size} distinct serials issued), per-robot requests ${CONCURRENCY} at a time`);
  console.log('');
  console.log('| what | certificates/s | × raw signing | × shared mode |');
  console.log('|---|---:|---:|---:|');
  console.log(`| raw signing: issueCertificate for a fresh public key (baseline) | ${f(raw)} | 1.00 | ${(raw / shared).toFixed(2)} |`);
  console.log(`| shared mode: enclave creation, batches of 1000 (baseline) | ${f(shared)} | ${(shared / raw).toFixed(2)} | 1.00 |`);
  console.log(`| **per-robot: CSR check + issue + record** | **${f(perRobot)}** | ${(perRobot / raw).toFixed(2)} | ${(perRobot / shared).toFixed(2)} |`);
  console.log(`| (agent side, not timed above: P-256 key + CSR) | ${f(agentSide)} | ${(agentSide / raw).toFixed(2)} | ${(agentSide / shared).toFixed(2)} |`);
} finally {
  await ctx.services.crls.close();
  ctx.services.bundles.close();
  await ctx.close();
}
