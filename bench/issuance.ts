/**
 * Enclave issuance throughput: key + certificate + signed permissions.
 *
 *   node --import tsx bench/issuance.ts [--n 2000] [--batch 1000] [--openssl-n 40]
 *
 * Measured in one run, on one machine:
 *   baseline   the openssl CLI doing the same work per enclave (genpkey, req, x509 -req, smime -sign)
 *   in-process keystores/issuer.ts issueEnclave() in a loop (what the batch API does per path)
 *   batch API  POST /v1/keystores/{ks}/enclaves:batch over HTTPS on loopback against the real server
 *              (includes sealing, SQLite inserts, audit entries, JSON)
 * Prints a Markdown table with enclaves/s and the ratio to the baseline.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { enclaveValidity, issueEnclave, permissionsFor } from '../server/keystores/issuer.js';
import { generateKeyPair, issueCertificate } from '../server/pki/index.js';
import { defaultPermissions } from '../server/policy/permissions.js';
import { pinnedRequest, readCa, startServer } from '../test/helpers/server-process.js';

const { values } = parseArgs({
  options: { n: { type: 'string', default: '2000' }, batch: { type: 'string', default: '1000' }, 'openssl-n': { type: 'string', default: '40' } },
});
const N = Number(values.n);
const BATCH = Number(values.batch);
const OPENSSL_N = Number(values['openssl-n']);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bench-'));

function opensslBaseline(): number {
  const dir = path.join(work, 'openssl');
  fs.mkdirSync(dir);
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  o(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', 'ca.key.pem']);
  o(['req', '-new', '-x509', '-key', 'ca.key.pem', '-out', 'ca.cert.pem', '-days', '3650', '-subj', '/CN=sros2CA', '-sha256']);
  const now = new Date();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < OPENSSL_N; i++) {
    const name = `/bench/robot_${i}`;
    o(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', `k${i}.pem`]);
    o(['req', '-new', '-key', `k${i}.pem`, '-out', `r${i}.csr`, '-subj', `/CN=${name.replace(/\//g, '\\/')}`, '-sha256']);
    o(['x509', '-req', '-in', `r${i}.csr`, '-CA', 'ca.cert.pem', '-CAkey', 'ca.key.pem', '-CAcreateserial', '-out', `c${i}.pem`, '-days', '365', '-sha256']);
    fs.writeFileSync(path.join(dir, `p${i}.xml`), defaultPermissions(name, now, new Date(now.getTime() + 365 * 86400_000), 0));
    o(['smime', '-sign', '-text', '-in', `p${i}.xml`, '-out', `p${i}.p7s`, '-signer', 'ca.cert.pem', '-inkey', 'ca.key.pem']);
  }
  return OPENSSL_N / (Number(process.hrtime.bigint() - t0) / 1e9);
}

function inProcess(): number {
  const caKey = generateKeyPair();
  const now = new Date();
  const caCert = issueCertificate({
    subjectCN: 'sros2CA',
    publicKeyPem: caKey.publicKeyPem,
    issuer: { keyPem: caKey.privateKeyPem },
    notBefore: now,
    notAfter: new Date(now.getTime() + 3650 * 86400_000),
    profile: 'ca',
  });
  const ca = { certPem: caCert, keyPem: caKey.privateKeyPem };
  const ks = { identityCa: ca, permissionsCa: ca, domainId: 0 };
  const v = enclaveValidity(now, 365, 3600, new Date(now.getTime() + 3650 * 86400_000));
  for (let i = 0; i < 200; i++) issueEnclave(ks, `/warm/robot_${i}`, permissionsFor(ks, `/warm/robot_${i}`, null, v), v, now);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) issueEnclave(ks, `/bench/robot_${i}`, permissionsFor(ks, `/bench/robot_${i}`, null, v), v, now);
  return N / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function batchApi(): Promise<number[]> {
  const dataDir = path.join(work, 'data');
  const server = await startServer(['--data-dir', dataDir, '--listen', '127.0.0.1:0'], { ENCLAVE_ADMIN_PASSWORD: 'bench-admin-password' });
  try {
    const ca = readCa(dataDir);
    const token = (await pinnedRequest(`${server.url}/v1/auth/login`, ca, { method: 'POST', body: { username: 'admin', password: 'bench-admin-password' } })).body.token;
    await pinnedRequest(`${server.url}/v1/keystores`, ca, { method: 'POST', token, body: { name: 'bench' } });
    const rates: number[] = [];
    for (let round = 0; round < 4; round++) {
      const paths = Array.from({ length: BATCH }, (_, i) => `/r${round}/robot_${i}`);
      const t0 = process.hrtime.bigint();
      const res = await pinnedRequest(`${server.url}/v1/keystores/bench/enclaves:batch`, ca, { method: 'POST', token, body: { paths } });
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      if (res.status !== 201) throw new Error(`batch failed: ${res.status} ${JSON.stringify(res.body)}`);
      if (round > 0) rates.push(BATCH / s); // round 0 warms the JIT
    }
    return rates;
  } finally {
    await server.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  const baseline = opensslBaseline();
  const single = inProcess();
  const batch = await batchApi();
  const b = median(batch);
  const f = (x: number) => x.toFixed(0);
  console.log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}, ${new Date().toISOString()}`);
  console.log('');
  console.log('| what | enclaves/s | × openssl CLI |');
  console.log('|---|---:|---:|');
  console.log(`| openssl CLI (baseline, ${OPENSSL_N} enclaves, 4 processes each) | ${baseline.toFixed(1)} | 1.0 |`);
  console.log(`| in-process issueEnclave (${N}) | ${f(single)} | ${(single / baseline).toFixed(0)} |`);
  console.log(`| batch API over HTTPS (${BATCH} per request, median of ${batch.length}: ${batch.map(f).join(', ')}) | ${f(b)} | ${(b / baseline).toFixed(0)} |`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
