import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { migrate, migrationFiles, migrationsDir, openDatabase } from '../server/db/database.js';
import { migratePostgres, openPostgres, pendingPostgresMigrations } from '../server/db/postgres.js';
import { freshDatabase, NO_POSTGRES, type TestDatabase } from './helpers/postgres.js';

interface Column {
  table: string;
  column: string;
  notNull: boolean;
  primaryKey: boolean;
}

/** SQLite's view of the schema the SQLite migrations make. */
function sqliteSchema(): { columns: Column[]; indexes: string[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-parity-'));
  try {
    const db = openDatabase(path.join(dir, 'p.db'));
    migrate(db);
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    const columns: Column[] = [];
    for (const table of tables) {
      for (const c of db.prepare(`SELECT * FROM pragma_table_info(?)`).all(table) as { name: string; notnull: number; pk: number }[]) {
        // SQLite lets a non-INTEGER primary key column hold NULL unless declared NOT NULL; PostgreSQL never does.
        columns.push({ table, column: c.name, notNull: c.notnull === 1 || c.pk > 0, primaryKey: c.pk > 0 });
      }
    }
    const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    db.close();
    return { columns: columns.sort(byName), indexes };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const byName = (a: Column, b: Column) => `${a.table}.${a.column}`.localeCompare(`${b.table}.${b.column}`);

describe('PostgreSQL migrations', { skip: NO_POSTGRES }, () => {
  let db: TestDatabase;
  before(async () => {
    db = await freshDatabase('migrations');
  });
  after(async () => {
    await db?.drop();
  });

  test('replicas starting together: each migration applied exactly once, every start returns', async () => {
    const pools = Array.from({ length: 4 }, () => openPostgres({ url: db.url, max: 2 }));
    try {
      const results = await Promise.all(pools.map((p) => migratePostgres(p)));
      const files = migrationFiles(migrationsDir('postgres'));
      assert.deepEqual(results.flatMap((r) => r.applied).sort(), files, 'every file applied once, by one of them');
      assert.equal(results.filter((r) => r.applied.length > 0).length, 1, 'the lock holder applied them all');
      const recorded = (await pools[0]!.query('SELECT name FROM schema_migrations ORDER BY name')).rows.map((r) => r.name);
      assert.deepEqual(recorded, files);
      const again = await migratePostgres(pools[1]!);
      assert.deepEqual(again, { applied: [], alreadyApplied: files.length });
      assert.deepEqual(await pendingPostgresMigrations(pools[2]!), []);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  test('the PostgreSQL schema has the same tables, columns, nullability, keys and indexes as the SQLite one', async () => {
    const pool = openPostgres({ url: db.url });
    try {
      await migratePostgres(pool);
      const { rows } = await pool.query<{ table: string; column: string; nullable: string; pk: boolean }>(`
        SELECT c.table_name AS table, c.column_name AS column, c.is_nullable AS nullable,
               EXISTS (SELECT 1 FROM information_schema.table_constraints t
                         JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
                        WHERE t.constraint_type = 'PRIMARY KEY' AND k.table_name = c.table_name
                          AND k.column_name = c.column_name) AS pk
          FROM information_schema.columns c
         WHERE c.table_schema = 'public'`);
      const columns = rows
        .map((r) => ({ table: r.table, column: r.column, notNull: r.nullable === 'NO', primaryKey: r.pk }))
        .sort(byName);
      const indexes = (await pool.query<{ name: string }>(
        "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey' ORDER BY indexname",
      )).rows.map((r) => r.name);
      const sqlite = sqliteSchema();
      assert.deepEqual(columns, sqlite.columns);
      assert.deepEqual(indexes, sqlite.indexes);
    } finally {
      await pool.end();
    }
  });

  test('the audit log is append-only in PostgreSQL too (UPDATE, DELETE, TRUNCATE abort)', async () => {
    const pool = openPostgres({ url: db.url });
    try {
      await migratePostgres(pool);
      await pool.query(`INSERT INTO audit_log (id, at, actor, actor_kind, action, result, prev_hash, hash)
        VALUES (1, '2026-01-01T00:00:00.000Z', 'admin', 'user', 'test', 'success', 'g', 'h')`);
      await assert.rejects(pool.query("UPDATE audit_log SET actor = 'x'"), /append-only/);
      await assert.rejects(pool.query('DELETE FROM audit_log'), /append-only/);
      await assert.rejects(pool.query('TRUNCATE audit_log'), /append-only/);
      assert.equal((await pool.query('SELECT actor FROM audit_log')).rows[0].actor, 'admin');
    } finally {
      await pool.end();
    }
  });

  test('a failing migration leaves nothing half-applied and the lock free', async () => {
    const other = await freshDatabase('failing');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-pgmig-'));
    const pool = openPostgres({ url: other.url });
    try {
      fs.writeFileSync(path.join(dir, '001-a.sql'), 'CREATE TABLE a (x INTEGER);');
      fs.writeFileSync(path.join(dir, '002-b.sql'), 'CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);');
      await assert.rejects(migratePostgres(pool, dir), /relation "nope" does not exist/);
      assert.deepEqual(await pendingPostgresMigrations(pool, dir), ['002-b.sql']);
      assert.equal((await pool.query("SELECT to_regclass('b') IS NULL AS gone")).rows[0].gone, true);
      // Another replica can take the lock at once: the failed start released it.
      const probe = new pg.Client({ connectionString: other.url });
      await probe.connect();
      try {
        assert.equal((await probe.query('SELECT pg_try_advisory_lock($1) AS got', [0x656e636c617665])).rows[0].got, true);
      } finally {
        await probe.end();
      }
    } finally {
      await pool.end();
      fs.rmSync(dir, { recursive: true, force: true });
      await other.drop();
    }
  });
});
