import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type Db = Database.Database;

/** Opens (creating if needed) the embedded SQLite database with the settings every code path relies on. */
export function openDatabase(file: string): Db {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  // WAL + NORMAL is durable across process crashes; only an OS crash can lose the last commits.
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  if (file !== ':memory:') fs.chmodSync(file, 0o600);
  return db;
}

export type Dialect = 'sqlite' | 'postgres';

/**
 * Migrations ship next to the code (`migrations/<dialect>/` at the project root), found from source or from
 * `dist/`. Each dialect has its own files under the same names, so both stores record the same history.
 */
export function migrationsDir(dialect: Dialect): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'migrations', dialect);
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`migrations/${dialect} folder not found`);
    dir = parent;
  }
}

export const defaultMigrationsDir = (): string => migrationsDir('sqlite');

/** `NNN-name.sql` files of a migrations folder, in the order they are applied. */
export function migrationFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{3}-[a-z0-9-]+\.sql$/.test(f))
    .sort();
}

export interface MigrationResult {
  applied: string[];
  alreadyApplied: number;
}

/**
 * Applies `NNN-name.sql` files in name order, each in its own transaction, recording each in
 * `schema_migrations`. A landed migration is never edited: a recorded name is never run again.
 */
export function migrate(db: Db, dir = defaultMigrationsDir()): MigrationResult {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
  ) STRICT`);
  const done = new Set(
    db.prepare('SELECT name FROM schema_migrations').pluck().all() as string[],
  );
  const files = migrationFiles(dir);
  const record = db.prepare('INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)');
  const applied: string[] = [];
  for (const file of files) {
    if (done.has(file)) continue;
    const sql = fs.readFileSync(path.join(dir, file), 'utf8');
    db.transaction(() => {
      db.exec(sql);
      record.run(file, new Date().toISOString());
    })();
    applied.push(file);
  }
  return { applied, alreadyApplied: done.size };
}

export function pendingMigrations(db: Db, dir = defaultMigrationsDir()): string[] {
  const exists = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_migrations'")
    .get();
  const done = exists
    ? new Set(db.prepare('SELECT name FROM schema_migrations').pluck().all() as string[])
    : new Set<string>();
  return migrationFiles(dir).filter((f) => !done.has(f));
}
