/**
 * ENCLAVE_DATABASE_PASSWORD_FILE against pg's own connection parameters: the compose deployment gives the URL
 * without a password and the password in a file, and pg lets the URL's (empty) password override a `password`
 * option. No server is needed: pg resolves the parameters when a client is made, before connecting.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { openPostgres } from '../server/db/postgres.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-pgpw-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** What a client of this pool would send: user, password, host, port, database. */
async function params(url: string, password?: string): Promise<Record<string, unknown>> {
  let passwordFile: string | undefined;
  if (password !== undefined) {
    passwordFile = path.join(dir, `pw-${Math.random().toString(36).slice(2)}`);
    fs.writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  }
  const pool = openPostgres({ url, passwordFile });
  try {
    const c = new pg.Client(pool.options) as unknown as { connectionParameters: Record<string, unknown> };
    const { user, password: pw, host, port, database } = c.connectionParameters;
    return { user, password: pw, host, port, database };
  } finally {
    await pool.end();
  }
}

test('the password file is used with a URL that has no password (docker-compose.ha.yml)', async () => {
  assert.deepEqual(await params('postgres://enclave@db:5432/enclave', 'f0e1d2c3b4a5'), {
    user: 'enclave', password: 'f0e1d2c3b4a5', host: 'db', port: 5432, database: 'enclave',
  });
});

test('a password with URL-special characters arrives unchanged', async () => {
  const odd = 'p@ss:w/rd %20#?&=\\\'"ü';
  assert.equal((await params('postgres://enclave@db/enclave', odd)).password, odd);
});

test('the file wins over a password in the URL; without a file the URL is used as given', async () => {
  assert.equal((await params('postgres://enclave:old@db/enclave', 'new')).password, 'new');
  assert.deepEqual(await params('postgres://enclave:inurl@db:5433/fleet'), {
    user: 'enclave', password: 'inurl', host: 'db', port: 5433, database: 'fleet',
  });
});
