import crypto from 'node:crypto';
import pg from 'pg';

/**
 * The PostgreSQL half of the store matrix runs when ENCLAVE_TEST_DATABASE_URL names a server where that role
 * may create databases (`.ci/run` starts a throw-away cluster with scripts/postgres-throwaway.sh). Each test
 * file gets its own database, dropped at the end, as each gets its own SQLite data folder.
 */
export const TEST_DATABASE_URL = process.env.ENCLAVE_TEST_DATABASE_URL || undefined;
export const NO_POSTGRES = TEST_DATABASE_URL ? false : 'ENCLAVE_TEST_DATABASE_URL is not set (README, Tests: scripts/postgres-throwaway.sh starts a cluster)';

/**
 * Which store the app-level tests and the servers they start run on: SQLite, or PostgreSQL when
 * ENCLAVE_TEST_STORE=postgres (the second half of the store matrix, which needs ENCLAVE_TEST_DATABASE_URL).
 */
export const TEST_STORE: 'sqlite' | 'postgres' = process.env.ENCLAVE_TEST_STORE === 'postgres' ? 'postgres' : 'sqlite';

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
}

/**
 * A new, empty database named `<prefix>_<label>_<random>` on the server `serverUrl` names (its role may CREATE
 * DATABASE), and how to drop it. Used by the tests and by the benchmarks' PostgreSQL runs.
 */
export async function createDatabase(serverUrl: string, prefix: string, label: string): Promise<TestDatabase & { name: string }> {
  const name = `${prefix}_${label.replace(/[^a-z0-9]/g, '_')}_${crypto.randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: serverUrl });
      await c.connect();
      try {
        // Cleanup, not what a test checks: an autovacuum worker (the superuser's, which FORCE may not end) can
        // hold the database for a moment; try again, and leave it to the throw-away cluster if it stays.
        for (let attempt = 1; ; attempt++) {
          try {
            await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
            return;
          } catch (err) {
            if (attempt === 5 || (err as { code?: string }).code !== '42501') throw err;
            await new Promise((r) => setTimeout(r, 200 * attempt));
          }
        }
      } catch {
        // left for the cluster's teardown
      } finally {
        await c.end();
      }
    },
  };
}

export async function freshDatabase(label: string): Promise<TestDatabase> {
  if (!TEST_DATABASE_URL) throw new Error(String(NO_POSTGRES));
  return createDatabase(TEST_DATABASE_URL, 't', label);
}
