import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import request from 'supertest';
import type { Express } from 'express';
import { createApp, servicesOf, type AppOptions, type Services } from '../../server/app.js';
import { openStore } from '../../server/store/open.js';
import type { Store } from '../../server/store/store.js';
import { freshDatabase, TEST_DATABASE_URL, TEST_STORE } from './postgres.js';

export { TEST_STORE };
import { createLogger } from '../../server/logger.js';
import { Sealer } from '../../server/secrets/seal.js';

export const ADMIN = { username: 'admin', password: 'admin-password-for-tests' };

/** A fresh, migrated, followed store: a file in `dir`, or a database of its own on the test cluster. */
export async function makeTestStore(dir: string, now?: () => Date, pollMs?: number): Promise<{ store: Store; drop(): Promise<void> }> {
  if (TEST_STORE === 'sqlite') {
    const { store } = await openStore({ sqliteFile: path.join(dir, 'enclaves.db') }, { now, pollMs });
    return { store, drop: async () => {} };
  }
  if (!TEST_DATABASE_URL) throw new Error('ENCLAVE_TEST_STORE=postgres needs ENCLAVE_TEST_DATABASE_URL (scripts/postgres-throwaway.sh)');
  const database = await freshDatabase(path.basename(dir).toLowerCase());
  const { store } = await openStore({ url: database.url, poolSize: 4 }, { now, pollMs });
  return { store, drop: () => database.drop() };
}

export interface TestContext {
  dir: string;
  store: Store;
  app: Express;
  services: Services;
  sealer: Sealer;
  masterKey: Buffer;
  jwtSecret: Buffer;
  /** Everything the app logged, as text (JSON lines). */
  logs(): string;
  /** Strings that must never appear in logs, recorded by the helpers below as they see them. */
  secrets: Set<string>;
  adminToken(): Promise<string>;
  login(username: string, password: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * A fresh app over a fresh migrated database in its own temp folder, with an admin user. `followerPollMs`: how
 * often the store's change follower reads the log unprompted (the store's default if unset).
 */
export async function makeTestApp(options: Partial<AppOptions> & { now?: () => Date; followerPollMs?: number } = {}): Promise<TestContext> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-test-'));
  // The XML time limit (1.5 s in production) is a safety net that a loaded machine running test files in
  // parallel can trip over on an ordinary policy (a 422 for a policy that is fine): generous unless a test is
  // about the limit itself and sets it.
  const { now, followerPollMs, ...appOptions } = { xmlTimeLimitMs: 20_000, ...options };
  const { store, drop } = await makeTestStore(dir, now, followerPollMs);
  const masterKey = crypto.randomBytes(32);
  const jwtSecret = crypto.randomBytes(32);
  const sealer = new Sealer([masterKey]);
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  const logger = createLogger('debug', sink);
  const app = await createApp({ store, logger, sealer, jwtSecret, options: appOptions, now });
  const services = servicesOf(app);
  // As main.ts does before it listens: a worker's start-up is not charged to the first upload's time limit,
  // which on a loaded machine (CI) turned the first policy or governance of a file into 503 sandbox-busy.
  await services.sandbox.warm();
  await services.users.create(null, { name: ADMIN.username, password: ADMIN.password, role: 'admin' });
  const secrets = new Set<string>([ADMIN.password, masterKey.toString('hex'), masterKey.toString('base64'), jwtSecret.toString('base64')]);
  let cachedAdmin: string | undefined;

  const ctx: TestContext = {
    dir,
    store,
    app,
    services,
    sealer,
    masterKey,
    jwtSecret,
    secrets,
    logs: () => chunks.join(''),
    async login(username, password) {
      secrets.add(password);
      const res = await request(app).post('/v1/auth/login').send({ username, password });
      assert.equal(res.status, 200, `login ${username}: ${res.status} ${JSON.stringify(res.body)}`);
      secrets.add(res.body.token);
      return res.body.token as string;
    },
    async adminToken() {
      cachedAdmin ??= await ctx.login(ADMIN.username, ADMIN.password);
      return cachedAdmin;
    },
    async close() {
      assertNoSecretsIn(ctx.logs(), secrets);
      await servicesOf(app).crls.close();
      await servicesOf(app).sandbox.close();
      await store.close();
      await drop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return ctx;
}

/** No password, token, key or private key material in a body of log text. */
export function assertNoSecretsIn(text: string, secrets: Iterable<string>): void {
  assert.doesNotMatch(text, /PRIVATE KEY/, 'a private key was logged');
  assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/, 'a JWT was logged');
  for (const s of secrets) {
    if (s && s.length >= 8) assert.ok(!text.includes(s), `a secret was logged (${s.slice(0, 3)}…)`);
  }
}

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });
