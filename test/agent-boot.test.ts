/**
 * A booting agent's first exchange: its robot client, holding neither token nor bundle, asks for both in one
 * login (`bundle: true`), against the real server process. The server's own request counters (`/metrics`)
 * tell which requests it answered.
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBundle } from '../client/agent/bundle.js';
import type { Logger } from '../client/agent/log.js';
import { RobotClient } from '../client/agent/robot-client.js';
import { loadEnrollment } from '../client/agent/state.js';
import { HttpClient } from '../client/common/http.js';
import { Admin, serverBuilt, startServer, tearDownAgentTest, type RealServer } from './helpers/agent-server.js';
import { enrollAgent } from './helpers/agent-proc.js';

const skip = serverBuilt() ? false : 'server/main.ts missing';
const base = fs.mkdtempSync(join(tmpdir(), 'agent-boot-'));
let server: RealServer;
let admin: Admin;
let stateDir: string;

before(async () => {
  if (skip) return;
  server = await startServer({ dataDir: join(base, 'data') });
  admin = await Admin.login(server);
  await admin.createKeystore('boot');
  await admin.createEnclave('boot', '/fleet/boot/node');
  await admin.createRobot('booter');
  await admin.bind('boot', '/fleet/boot/node', 'booter');
  stateDir = await enrollAgent({ base, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken('booter') });
});
after(() => tearDownAgentTest({ procs: [], admin, server, dirs: [base] }));

/** How many requests the server answered, by method, route and status (its Prometheus counters). */
async function answered(): Promise<Record<string, number>> {
  const http = new HttpClient(server.url, fs.readFileSync(server.caFile!, 'utf8'));
  try {
    const res = await http.request({ method: 'GET', path: 'metrics', timeoutMs: 10_000 });
    const counts: Record<string, number> = {};
    for (const m of res.body.toString('utf8').matchAll(/^enclave_http_requests_total\{method="(\w+)",route="([^"]+)",status="(\d+)"\} (\d+)$/gm)) {
      counts[`${m[1]} ${m[2]} ${m[3]}`] = Number(m[4]);
    }
    return counts;
  } finally {
    http.close();
  }
}

const delta = (after: Record<string, number>, before: Record<string, number>) =>
  Object.fromEntries(
    Object.entries(after)
      .filter(([k, v]) => !k.includes(' /metrics ') && v !== (before[k] ?? 0))
      .map(([k, v]) => [k, v - (before[k] ?? 0)]),
  );

test('a boot is one request: the login brings the bundle; later fetches go to the bundle route', { skip }, async () => {
  const enrollment = loadEnrollment(stateDir);
  const log: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
  const client = new RobotClient({ server: enrollment.server, ca: enrollment.ca, robot: enrollment.robot, key: enrollment.key, log });
  try {
    const start = await answered();
    const boot = await client.fetchBundle({ waitS: 30 });
    assert.ok(boot.changed);
    const held = parseBundle(boot.body);
    assert.deepEqual(held.enclaves.map((e) => e.path), ['/fleet/boot/node']);
    assert.ok(held.enclaves[0]!.files['key.pem']?.includes('PRIVATE KEY'));
    assert.deepEqual(delta(await answered(), start), { 'POST /v1/auth/robot 200': 1 });

    // Holding a token, a fetch without an etag (e.g. after trouble) asks the bundle route, as before.
    const mid = await answered();
    const again = await client.fetchBundle({ waitS: 0 });
    assert.ok(again.changed);
    assert.equal(parseBundle(again.body).revision, held.revision);
    assert.deepEqual(delta(await answered(), mid), { 'GET /v1/robot/bundle 200': 1 });
    assert.equal(await admin.robotLogins('booter'), 1);
  } finally {
    client.close();
  }
});
