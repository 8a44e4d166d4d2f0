import Database from 'better-sqlite3';
import { migrate, openDatabase, type Db, type MigrationResult } from '../db/database.js';
import { ConstraintViolation, ForeignKeyViolation, StoreError, StoreUnavailable, UniqueViolation } from './errors.js';
import type { Database as Port, Param, Sql } from './sql.js';

/** better-sqlite3 binds booleans as errors; SQLite stores them as 0/1 anyway. */
const bind = (params: readonly Param[]) => params.map((p) => (typeof p === 'boolean' ? (p ? 1 : 0) : p));

function translate(err: unknown): unknown {
  if (!(err instanceof Database.SqliteError)) return err;
  const code = err.code;
  if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE') return new UniqueViolation(err.message, { cause: err });
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') return new ForeignKeyViolation(err.message, { cause: err });
  if (code.startsWith('SQLITE_CONSTRAINT')) return new ConstraintViolation(err.message, { cause: err });
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') return new StoreUnavailable(err.message, { cause: err });
  return new StoreError(err.message, { cause: err });
}

class SqliteSql implements Sql {
  readonly dialect = 'sqlite' as const;
  private readonly statements = new Map<string, Database.Statement>();
  constructor(private readonly db: Db) {}

  private statement(text: string): Database.Statement {
    let s = this.statements.get(text);
    if (!s) {
      s = this.db.prepare(text);
      this.statements.set(text, s);
    }
    return s;
  }

  /** Synchronous underneath: the promise only gives both engines one shape. */
  async all<T>(text: string, params: readonly Param[] = []): Promise<T[]> {
    try {
      return this.statement(text).all(...bind(params)) as T[];
    } catch (err) {
      throw translate(err);
    }
  }
  async get<T>(text: string, params: readonly Param[] = []): Promise<T | undefined> {
    try {
      return this.statement(text).get(...bind(params)) as T | undefined;
    } catch (err) {
      throw translate(err);
    }
  }
  async run(text: string, params: readonly Param[] = []): Promise<{ changes: number }> {
    try {
      const statement = this.statement(text);
      // A SELECT run for its effect (e.g. a lock function on PostgreSQL) is stepped, not "run".
      if (statement.reader) {
        statement.all(...bind(params));
        return { changes: 0 };
      }
      return { changes: statement.run(...bind(params)).changes };
    } catch (err) {
      throw translate(err);
    }
  }
}

/**
 * The embedded store: one writer connection whose transactions are queued by an in-process lock (SQLite
 * allows one writer; queueing here instead of in `busy_timeout` keeps the event loop free while a
 * transaction awaits), and a second connection for `read`, which under WAL sees the last commit and never
 * waits for the writer nor sees its uncommitted rows.
 */
export class SqliteDatabase implements Port {
  readonly dialect = 'sqlite' as const;
  private readonly writer: SqliteSql;
  private readonly reader: SqliteSql;
  private readonly readerDb: Db;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly db: Db,
    private readonly migrationsDir?: string,
  ) {
    this.writer = new SqliteSql(db);
    this.readerDb = db.name === ':memory:' ? db : openDatabase(db.name);
    this.reader = new SqliteSql(this.readerDb);
  }

  static open(file: string, migrationsDir?: string): SqliteDatabase {
    return new SqliteDatabase(openDatabase(file), migrationsDir);
  }

  async tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    const previous = this.queue;
    let release!: () => void;
    this.queue = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const result = await fn(this.writer);
        this.db.exec('COMMIT');
        return result;
      } catch (err) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      throw translate(err);
    } finally {
      release();
    }
  }

  async read<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    return fn(this.reader);
  }

  async migrate(): Promise<MigrationResult> {
    return migrate(this.db, this.migrationsDir);
  }

  async ping(): Promise<void> {
    this.readerDb.prepare('SELECT 1').get();
  }

  async close(): Promise<void> {
    await this.queue;
    if (this.readerDb !== this.db) this.readerDb.close();
    this.db.close();
  }
}
