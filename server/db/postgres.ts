import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { migrationFiles, migrationsDir, type MigrationResult } from './database.js';

export interface PostgresOptions {
  /** `postgres://user@host:port/db`; a password in it is allowed but a file keeps it out of `ps` and env dumps. */
  url: string;
  /** File holding the password (`ENCLAVE_DATABASE_PASSWORD_FILE`, e.g. a Docker/Kubernetes secret). */
  passwordFile?: string;
  /** Pool size per replica. */
  max?: number;
}

/** A pooled PostgreSQL connection with the settings every code path relies on. */
export function openPostgres(options: PostgresOptions): pg.Pool {
  const password = options.passwordFile ? fs.readFileSync(options.passwordFile, 'utf8').replace(/\r?\n$/, '') : undefined;
  return new pg.Pool({
    connectionString: password === undefined ? options.url : withPassword(options.url, password),
    max: options.max ?? 10,
    application_name: 'enclave-server',
    // A replica that cannot reach the database answers 503 quickly instead of holding robots for minutes.
    connectionTimeoutMillis: 5_000,
  });
}

/**
 * pg lets every field of the connection string override the same option given beside it, and a URL without a
 * password (`postgres://enclave@db/enclave`) still yields an empty one: a `password` option would never be used.
 * The file's password goes into the URL instead (encoded, since pg decodes what it finds there).
 */
function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = encodeURIComponent(password);
  return u.toString();
}

/**
 * Every replica runs the migrations at start; the first to take this session-level advisory lock applies them,
 * the others wait and then find nothing left to do. The lock goes with the session, so a replica that dies
 * mid-migration frees it (and its open transaction rolls back). The number only has to be the same in every
 * replica and unused by anything else in the database.
 */
const MIGRATION_LOCK = 0x656e636c617665; // "enclave"

/**
 * Applies `migrations/postgres/NNN-name.sql` in name order, each in its own transaction together with its row
 * in `schema_migrations` (PostgreSQL DDL is transactional: a failing file leaves nothing behind).
 */
export async function migratePostgres(pool: pg.Pool, dir = migrationsDir('postgres')): Promise<MigrationResult> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        name TEXT PRIMARY KEY,
        applied_at TEXT NOT NULL
      )`);
      const done = new Set((await client.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name));
      const applied: string[] = [];
      for (const file of migrationFiles(dir)) {
        if (done.has(file)) continue;
        const sql = fs.readFileSync(path.join(dir, file), 'utf8');
        await client.query('BEGIN');
        try {
          await client.query(sql);
          await client.query('INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)', [file, new Date().toISOString()]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        }
        applied.push(file);
      }
      return { applied, alreadyApplied: done.size };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
}

export async function pendingPostgresMigrations(pool: pg.Pool, dir = migrationsDir('postgres')): Promise<string[]> {
  const exists = (await pool.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")).rows[0].present as boolean;
  const done = exists ? new Set((await pool.query<{ name: string }>('SELECT name FROM schema_migrations')).rows.map((r) => r.name)) : new Set<string>();
  return migrationFiles(dir).filter((f) => !done.has(f));
}
