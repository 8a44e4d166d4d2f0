/**
 * Per-robot identities: certificates for robots' own keys, and what a boot storm costs in each mode.
 *
 *   node --import tsx bench/identities.ts [--robots 10000] [--enclaves 2]
 *
 * In-process, against the real services over a real SQLite file (no HTTP: bench/fleet.ts measures the wire).
 * Measured in one run, on one machine:
 *   baseline    shared mode: each robot's first bundle (2 shared enclaves, one shared content for the fleet)
 *   issue       per-robot mode: every robot sends a CSR per enclave (IdentitiesService.issue: proof of
 *               possession, freshness, binding rule, certificate, one write transaction with its audit entry)
 *   bundle      per-robot mode: every robot's first bundle, before it has a certificate (shared content
 *               with an empty hole per enclave)
 *   re-issue    per-robot mode: every robot restarts and asks again (the previous serial revoked in a batch),
 *               then the one CRL re-signing per keystore that the batch costs
 * CSRs (key generation and the robot's signature) are made before the clock starts: that is robot-side work.
 * Prints a Markdown table.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { createApp, servicesOf } from '../server/app.js';
import { migrate, openDatabase } from '../server/db/database.js';
import { createLogger } from '../server/logger.js';
import { ECDSA_WITH_SHA256, bits, cnName, ctx, seq, smallInt, toDer, toPem, parseDer } from '../server/pki/der.js';
import { Sealer } from '../server/secrets/seal.js';

const { values } = parseArgs({ options: { robots: { type: 'string', default: '10000' }, enclaves: { type: 'string', default: '2' } } });
const ROBOTS = Number(values.robots);
const ENCLAVES = Number(values.enclaves);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'identities-bench-'));

/** A PKCS#10 request as a robot makes one (its agent uses Node's crypto the same way). */
function makeCsr(): string {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const info = seq(smallInt(0), cnName('robot'), parseDer(publicKey.export({ type: 'spki', format: 'der' })), ctx(0));
  const signature = crypto.sign('sha256', toDer(info), { key: privateKey, dsaEncoding: 'der' });
  return toPem('CERTIFICATE REQUEST', toDer(seq(info, ECDSA_WITH_SHA256, bits(signature))));
}

const seconds = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

async function main(): Promise<void> {
  const db = openDatabase(path.join(work, 'enclaves.db'));
  migrate(db);
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const app = createApp({
    db,
    logger: createLogger('warn', sink),
    sealer: new Sealer([crypto.randomBytes(32)]),
    jwtSecret: crypto.randomBytes(32),
    // A boot storm asks once per robot and enclave; the batch window is long enough to hold the whole run.
    options: { crlBatchMs: 3_600_000 },
  });
  const s = servicesOf(app);
  await s.users.create(null, { name: 'admin', password: 'admin-password-for-bench', role: 'admin' });
  const { Caller } = await import('../server/acl/caller.js');
  const admin = new Caller({ kind: 'user', name: 'admin', role: 'admin' }, []);
  const paths = Array.from({ length: ENCLAVES }, (_, i) => `/fleet/amr/part_${i}`);
  for (const [ks, mode] of [['shared_ks', 'shared'], ['own_ks', 'per-robot']] as const) {
    await s.keystores.create(admin, { name: ks, domainId: 0, validityDays: 3650, splitCa: false, enclaveValidityDays: 365, backdateSeconds: 3600, identityMode: mode });
    await s.enclaves.createMany(admin, ks, paths, {});
  }
  for (const ks of ['shared_ks', 'own_ks']) {
    for (const enclave of paths) s.bindings.create(admin, { keystore: ks, enclave, selector: { fleet: ks } });
  }
  const robots: { name: string; keyId: string }[] = [];
  const insert = db.transaction((mode: string, from: number) => {
    for (let i = from; i < from + ROBOTS; i++) {
      const name = `r${i}`;
      const keyId = crypto.randomBytes(32).toString('hex');
      s.robots.repo.insert(name, { fleet: mode }, new Date().toISOString());
      s.robots.repo.setKey(name, { publicKey: 'bench', keyId, agentVersion: null }, new Date().toISOString());
      if (mode === 'own_ks') robots.push({ name, keyId });
    }
  });
  insert('shared_ks', 0);
  insert('own_ks', ROBOTS);
  process.stderr.write(`made ${2 * ROBOTS} robots; making ${2 * ROBOTS * ENCLAVES} CSRs (robot-side work, not timed)\n`);
  const csrs = Array.from({ length: 2 * ROBOTS * ENCLAVES }, makeCsr);

  const rows: [string, number, string][] = [];
  let t0 = process.hrtime.bigint();
  let bytes = 0;
  for (let i = 0; i < ROBOTS; i++) bytes += s.bundles.body(s.bundles.current(`r${i}`)).length;
  const baseline = ROBOTS / seconds(t0);
  rows.push([`shared: first bundle of ${ROBOTS} robots (${ENCLAVES} enclaves, ${Math.round(bytes / ROBOTS)} B each)`, baseline, 'robots/s']);

  bytes = 0;
  t0 = process.hrtime.bigint();
  for (const r of robots) bytes += s.bundles.body(s.bundles.current(r.name)).length;
  rows.push([`per-robot: first bundle of ${ROBOTS} robots, before any certificate (${Math.round(bytes / ROBOTS)} B each)`, ROBOTS / seconds(t0), 'robots/s']);

  // Each answer carries the robot's new bundle revision: the bundle with its own cert.pem is built here.
  let next = 0;
  t0 = process.hrtime.bigint();
  for (const r of robots) for (const enclave of paths) s.identities.issue({ kind: 'robot', ...r }, { keystore: 'own_ks', enclave, csr: csrs[next++]! });
  rows.push([`per-robot: certificates issued, each with the robot's new bundle (${ROBOTS} robots × ${ENCLAVES})`, (ROBOTS * ENCLAVES) / seconds(t0), 'certificates/s']);
  bytes = 0;
  for (const r of robots) bytes += s.bundles.body(s.bundles.current(r.name)).length;
  process.stderr.write(`per-robot bundle with its own certificates: ${Math.round(bytes / ROBOTS)} B\n`);

  // Re-issue storm: each robot re-issue is rate-limited (burst 3), so this second round is within budget.
  let keystoreChanges = 0;
  const stop = s.changes.subscribe((c) => void (c.kind === 'keystore' && keystoreChanges++));
  t0 = process.hrtime.bigint();
  for (const r of robots) for (const enclave of paths) s.identities.issue({ kind: 'robot', ...r }, { keystore: 'own_ks', enclave, csr: csrs[next++]! });
  const reissue = (ROBOTS * ENCLAVES) / seconds(t0);
  t0 = process.hrtime.bigint();
  s.crls.flush('own_ks');
  const flushMs = seconds(t0) * 1000;
  stop();
  rows.push([`per-robot: re-issue after a restart, previous serial revoked (${ROBOTS} × ${ENCLAVES})`, reissue, 'certificates/s']);
  rows.push([`per-robot: CRL re-signed once for ${ROBOTS * ENCLAVES} revocations (${keystoreChanges} fleet-wide update)`, flushMs, 'ms']);

  process.stdout.write(`\nRun ${new Date().toISOString()}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}\n\n`);
  process.stdout.write('| what | figure | unit | × shared first bundle |\n|---|---:|---|---:|\n');
  for (const [what, v, unit] of rows) {
    process.stdout.write(`| ${what} | ${v.toFixed(0)} | ${unit} | ${unit === 'ms' ? '' : (v / baseline).toFixed(2)} |\n`);
  }
  s.crls.close();
  s.bundles.close();
  await s.sandbox.close();
  db.close();
  fs.rmSync(work, { recursive: true, force: true });
}

await main();
