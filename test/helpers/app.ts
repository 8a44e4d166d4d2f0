import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import request from 'supertest';
import type { Express } from 'express';
import { createApp, servicesOf, type AppOptions, type Services } from '../../server/app.js';
import { migrate, openDatabase, type Db } from '../../server/db/database.js';
import { createLogger } from '../../server/logger.js';
import { Sealer } from '../../server/secrets/seal.js';

export const ADMIN = { username: 'admin', password: 'admin-password-for-tests' };

export interface TestContext {
  dir: string;
  db: Db;
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
  close(): void;
}

/** A fresh app over a fresh migrated database in its own temp folder, with an admin user. */
export async function makeTestApp(options: Partial<AppOptions> & { now?: () => Date } = {}): Promise<TestContext> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-test-'));
  const db = openDatabase(path.join(dir, 'enclaves.db'));
  migrate(db);
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
  const { now, ...appOptions } = options;
  const app = createApp({ db, logger, sealer, jwtSecret, options: appOptions, now });
  const services = servicesOf(app);
  await services.users.create(null, { name: ADMIN.username, password: ADMIN.password, role: 'admin' });
  const secrets = new Set<string>([ADMIN.password, masterKey.toString('hex'), masterKey.toString('base64'), jwtSecret.toString('base64')]);
  let cachedAdmin: string | undefined;

  const ctx: TestContext = {
    dir,
    db,
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
    close() {
      assertNoSecretsIn(ctx.logs(), secrets);
      db.close();
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
