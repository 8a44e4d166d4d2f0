/**
 * Short-lived per-robot certificates (`--identity-validity-days`), the agent's side: the agent's own identity
 * keeper and robot client against the real server process. The keeper's clock is the test's, moved past the
 * `renewAfter` the server gave, so no test waits days; the server issues at its own (real) clock.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBundle, type HeldEnclave } from '../client/agent/bundle.js';
import { IdentityKeeper } from '../client/agent/identity.js';
import type { Logger } from '../client/agent/log.js';
import { RobotClient } from '../client/agent/robot-client.js';
import { loadEnrollment } from '../client/agent/state.js';
import { Admin, serverBuilt, startServer, tearDownAgentTest, type RealServer } from './helpers/agent-server.js';
import { enrollAgent } from './helpers/agent-proc.js';

const skip = serverBuilt() ? false : 'server/main.ts missing';
const KS = 'renew';
const ENCLAVE = '/fleet/renew/node';
const base = fs.mkdtempSync(join(tmpdir(), 'agent-renewal-'));
let server: RealServer;
let admin: Admin;
let stateDir: string;

before(async () => {
  if (skip) return;
  server = await startServer({ dataDir: join(base, 'data'), env: { ENCLAVE_IDENTITY_VALIDITY_DAYS: '3' } });
  admin = await Admin.login(server);
  await admin.createKeystore(KS, { identityMode: 'per-robot' });
  await admin.createEnclave(KS, ENCLAVE);
  await admin.createRobot('renewer');
  await admin.bind(KS, ENCLAVE, 'renewer');
  stateDir = await enrollAgent({ base, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken('renewer') });
});
after(() => tearDownAgentTest({ procs: [], admin, server, dirs: [base] }));

test('a robot certificate due for renewal is replaced by one for a new key; until then, and if refused, the current one stays', { skip }, async () => {
  const enrollment = loadEnrollment(stateDir);
  const lines: string[] = [];
  const log: Logger = { debug: () => {}, info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) };
  const client = new RobotClient({ server: enrollment.server, ca: enrollment.ca, robot: enrollment.robot, key: enrollment.key, log });
  let now = Date.now();
  const keeper = new IdentityKeeper(client, log, { baseMs: 100, maxMs: 1000 }, () => now);
  const bundle = async (): Promise<HeldEnclave[]> => {
    const got = await client.fetchBundle({ waitS: 0 });
    assert.ok(got.changed);
    return parseBundle(got.body).enclaves;
  };
  try {
    const first = await keeper.complete(await bundle());
    assert.equal(first.ready.length, 1);
    const cert1 = new X509Certificate(first.ready[0]!.files['cert.pem']!);
    const days = (Date.parse(cert1.validTo) - Date.parse(cert1.validFrom)) / 86_400_000;
    assert.ok(days > 2.9 && days < 3.1, `a three-day certificate (${days.toFixed(2)} days)`);
    // The server said when to renew: two thirds into the certificate's life.
    assert.equal(first.renewals.length, 1);
    const renewAt = first.renewals[0]!;
    const expected = Date.parse(cert1.validFrom) + ((Date.parse(cert1.validTo) - Date.parse(cert1.validFrom)) * 2) / 3;
    assert.ok(Math.abs(renewAt - expected) < 2000, `renewal at 2/3 of the lifetime (${new Date(renewAt).toISOString()})`);

    // Before that time: the bundle now carries the certificate; nothing is asked.
    const held = await bundle();
    assert.equal(held[0]!.identitySerial, first.ready[0]!.identitySerial);
    const quiet = await keeper.complete(held);
    assert.equal(quiet.ready[0]!.files['cert.pem'], first.ready[0]!.files['cert.pem']);
    assert.equal(quiet.ready[0]!.files['key.pem'], first.ready[0]!.files['key.pem']);
    assert.deepEqual(quiet.renewals, [renewAt]);

    // Past it: a new key and a new certificate with the same subject; the old serial is revoked (the default).
    now = renewAt + 1000;
    const renewed = await keeper.complete(held);
    const cert2 = new X509Certificate(renewed.ready[0]!.files['cert.pem']!);
    assert.notEqual(cert2.serialNumber, cert1.serialNumber);
    assert.equal(cert2.subject, cert1.subject);
    assert.notEqual(renewed.ready[0]!.files['key.pem'], first.ready[0]!.files['key.pem'], 'a new key');
    assert.ok(cert2.publicKey.equals(new X509Certificate(renewed.ready[0]!.files['cert.pem']!).publicKey));
    assert.equal(renewed.renewals.length, 1);
    assert.ok(renewed.renewals[0]! > renewAt, 'the next renewal is later');
    assert.ok(lines.some((l) => /is due for renewal/.test(l)));
    const after = await bundle();
    assert.equal(after[0]!.files['cert.pem'], renewed.ready[0]!.files['cert.pem'], 'the bundle carries the new certificate');
    const identities = (await admin.call('GET', '/v1/robots/renewer/identities')) as { identities: { serial: string; status: string }[] };
    const statusOf = (serial: string) => identities.identities.find((i) => i.serial.toUpperCase() === serial)?.status;
    assert.equal(statusOf(cert1.serialNumber), 'revoked');
    assert.equal(statusOf(cert2.serialNumber), 'live');

    // Renewals refused (the server's rate limit: 3 at once): the current certificate stays in use.
    const kept = await keeper.complete(after);
    now = kept.renewals[0]! + 1000;
    let last = kept;
    for (let i = 0; i < 4; i++) {
      last = await keeper.complete(await bundle());
      assert.equal(last.ready.length, 1, 'never without a certificate');
      now = Math.max(now, ...last.renewals) + 1000;
    }
    assert.ok(lines.some((l) => /not issued: .*too many/i.test(l)), lines.join('\n'));
    const files = last.ready[0]!.files;
    assert.ok(new X509Certificate(files['cert.pem']!).checkPrivateKey((await import('node:crypto')).createPrivateKey(files['key.pem']!)), 'the key and certificate in use belong together');
  } finally {
    client.close();
  }
});
