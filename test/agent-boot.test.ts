/**
 * A booting agent's first exchange: its robot client, holding neither token nor bundle, asks for both in one
 * login (`bundle: true`), against the real server process. The server's own request counters (`/metrics`)
 * tell which requests it answered. Against a server from before that field, the agent falls back to a plain
 * login and a bundle request.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
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

const log: Logger = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

const delta = (after: Record<string, number>, before: Record<string, number>) =>
  Object.fromEntries(
    Object.entries(after)
      .filter(([k, v]) => !k.includes(' /metrics ') && v !== (before[k] ?? 0))
      .map(([k, v]) => [k, v - (before[k] ?? 0)]),
  );

/** A boot's fetch: a new bundle with the one bound enclave and its key. */
async function bootBundle(client: RobotClient): Promise<ReturnType<typeof parseBundle>> {
  const boot = await client.fetchBundle({ waitS: 30 });
  assert.ok(boot.changed);
  const held = parseBundle(boot.body);
  assert.deepEqual(held.enclaves.map((e) => e.path), ['/fleet/boot/node']);
  assert.ok(held.enclaves[0]!.files['key.pem']?.includes('PRIVATE KEY'));
  return held;
}

test('a boot is one request: the login brings the bundle; later fetches go to the bundle route', { skip }, async () => {
  const enrollment = loadEnrollment(stateDir);
  const client = new RobotClient({ server: enrollment.server, ca: enrollment.ca, robot: enrollment.robot, key: enrollment.key, log });
  try {
    const start = await answered();
    const held = await bootBundle(client);
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

/**
 * A front that passes every request to the real server after `rewrite` (which may change its path and body):
 * how these tests stand for a server from before a feature, with the real server's own answers.
 */
async function front(rewrite: (req: http.IncomingMessage, body: Buffer) => { path: string; body: Buffer }): Promise<{ url: string; paths: string[]; close: () => Promise<void> }> {
  const ca = fs.readFileSync(server.caFile!, 'utf8');
  const target = new URL(server.url);
  const paths: string[] = [];
  const proxy = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const out = rewrite(req, Buffer.concat(chunks));
      paths.push(`${req.method} ${out.path}`);
      const headers = { ...req.headers, host: target.host, 'content-length': String(out.body.length) };
      const forward = https.request({ host: target.hostname, port: target.port, path: out.path, method: req.method, headers, ca }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      forward.on('error', () => res.destroy());
      forward.end(out.body);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    paths,
    close: () =>
      new Promise<void>((resolve) => {
        proxy.closeAllConnections();
        proxy.close(() => resolve());
      }),
  };
}

/**
 * A server from before `bundle` (its login schema was strict) refused the field with 422: this front turns a
 * login's `bundle: true` into a value the real server's own validation refuses, so the 422 the agent sees is
 * the server's.
 */
async function frontRefusingBundle(): Promise<{ url: string; bundleAsked: () => number; close: () => Promise<void> }> {
  let asked = 0;
  const f = await front((req, body) => {
    if (req.method === 'POST' && req.url === '/v1/auth/robot') {
      const login = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
      if (login.bundle === true) {
        asked++;
        login.bundle = 'unknown-field';
        return { path: req.url, body: Buffer.from(JSON.stringify(login)) };
      }
    }
    return { path: req.url!, body };
  });
  return { url: f.url, bundleAsked: () => asked, close: f.close };
}

test('a server that refuses `bundle` in the login (422): the agent logs in without it and fetches the bundle apart', { skip }, async () => {
  const front = await frontRefusingBundle();
  const enrollment = loadEnrollment(stateDir);
  const client = new RobotClient({ server: front.url, ca: undefined, robot: enrollment.robot, key: enrollment.key, log });
  try {
    const logins = await admin.robotLogins('booter');
    const start = await answered();
    const held = await bootBundle(client);
    assert.equal(front.bundleAsked(), 1);
    assert.deepEqual(delta(await answered(), start), {
      'POST /v1/auth/robot 422': 1,
      'POST /v1/auth/robot 200': 1,
      'GET /v1/robot/bundle 200': 1,
    });
    assert.equal(await admin.robotLogins('booter'), logins + 1);

    // Having heard the refusal once, the client does not ask again: its next login is a plain one.
    await client.login(undefined, true);
    assert.equal(front.bundleAsked(), 1);
  } finally {
    client.close();
    await front.close();
  }
});

test('waiting for changes is a watch: two rotations arrive on one request, and its end is the next contact', { skip }, async () => {
  const enrollment = loadEnrollment(stateDir);
  const client = new RobotClient({ server: enrollment.server, ca: enrollment.ca, robot: enrollment.robot, key: enrollment.key, log });
  try {
    const held = await bootBundle(client);
    const start = await answered();
    const etag = `"${held.revision}"`;
    const first = client.fetchBundle({ etag, waitS: 4 });
    await admin.rotate('boot', '/fleet/boot/node');
    const a = await first;
    assert.ok(a.changed);
    const revA = parseBundle(a.body).revision;
    assert.notEqual(revA, held.revision);
    await admin.rotate('boot', '/fleet/boot/node');
    const b = await client.fetchBundle({ etag: `"${revA}"`, waitS: 4 });
    assert.ok(b.changed);
    assert.notEqual(parseBundle(b.body).revision, revA);
    const end = await client.fetchBundle({ etag: `"${parseBundle(b.body).revision}"`, waitS: 4 });
    assert.deepEqual(end, { changed: false });
    // One request brought both bundles (a watch is counted once it ends).
    assert.deepEqual(delta(await answered(), start), { 'GET /v1/robot/bundle 200': 1, 'POST /v1/keystores/:ks/enclaves/*/rotate 200': 2 });
  } finally {
    client.close();
  }
});

test('a server from before watches answers one as a poll: the agent takes that answer and long-polls from then on', { skip }, async () => {
  // The real server's general route answers a query it does not know (`was-watch`) at once, as such a server did.
  const f = await front((req, body) => ({ path: req.url!.replace('?watch=', '?was-watch='), body }));
  const enrollment = loadEnrollment(stateDir);
  const client = new RobotClient({ server: f.url, ca: undefined, robot: enrollment.robot, key: enrollment.key, log });
  try {
    const held = await bootBundle(client);
    const etag = `"${held.revision}"`;
    assert.deepEqual(await client.fetchBundle({ etag, waitS: 1 }), { changed: false });
    assert.deepEqual(await client.fetchBundle({ etag, waitS: 1 }), { changed: false });
    const bundleRequests = f.paths.filter((p) => p.startsWith('GET /v1/robot/bundle'));
    assert.deepEqual(bundleRequests, ['GET /v1/robot/bundle?was-watch=1', 'GET /v1/robot/bundle?wait=1']);
  } finally {
    client.close();
    await f.close();
  }
});
