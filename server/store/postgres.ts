import crypto from 'node:crypto';
import pg from 'pg';
import type { MigrationResult } from '../db/database.js';
import { migratePostgres, openPostgres, type PostgresOptions } from '../db/postgres.js';
import { ConstraintViolation, ForeignKeyViolation, StoreError, StoreUnavailable, UniqueViolation } from './errors.js';
import type { Database as Port, Param, Sql, TxOptions } from './sql.js';

/** Repositories write `?`; PostgreSQL wants `$1, $2, …`. Quoted text and identifiers are left alone. */
const numbered = new Map<string, string>();
export function toPostgres(text: string): string {
  let out = numbered.get(text);
  if (out !== undefined) return out;
  let n = 0;
  out = '';
  let quote: string | null = null;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = null;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else if (ch === '?') {
      out += `$${++n}`;
    } else {
      out += ch;
    }
  }
  numbered.set(text, out);
  return out;
}

/** SQLSTATE classes that mean "the database is not there right now", not "your request is wrong". */
const UNAVAILABLE = /^(08|53|57P0[1-3])/;
const RETRYABLE = new Set(['40001', '40P01']);
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH']);

function translate(err: unknown): unknown {
  if (err instanceof StoreError) return err;
  const e = err as { code?: string; message?: string; constraint?: string };
  const code = e?.code;
  if (code === '23505') return new UniqueViolation(`unique violation (${e.constraint ?? 'key'})`, { cause: err });
  if (code === '23503') return new ForeignKeyViolation(`foreign key violation (${e.constraint ?? 'key'})`, { cause: err });
  if (code === '23514' || code === '23502' || code === 'P0001') return new ConstraintViolation(e.message ?? 'constraint violation', { cause: err });
  if (code && (UNAVAILABLE.test(code) || NETWORK.has(code) || RETRYABLE.has(code))) return new StoreUnavailable(`database unavailable (${code})`, { cause: err });
  // pg reports a lost or refused connection, and its own connect timeout, without a SQLSTATE.
  if (/Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(e?.message ?? '')) {
    return new StoreUnavailable('database unavailable', { cause: err });
  }
  return err;
}

class PgSql implements Sql {
  readonly dialect = 'postgres' as const;
  constructor(private readonly client: pg.Pool | pg.PoolClient) {}
  async all<T>(text: string, params: readonly Param[] = []): Promise<T[]> {
    try {
      return (await this.client.query(toPostgres(text), params as Param[])).rows as T[];
    } catch (err) {
      throw translate(err);
    }
  }
  async get<T>(text: string, params: readonly Param[] = []): Promise<T | undefined> {
    return (await this.all<T>(text, params))[0];
  }
  async run(text: string, params: readonly Param[] = []): Promise<{ changes: number }> {
    try {
      return { changes: (await this.client.query(toPostgres(text), params as Param[])).rowCount ?? 0 };
    } catch (err) {
      throw translate(err);
    }
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The replicated store: a pool per replica, READ COMMITTED transactions, and explicit locks where order
 * matters (the audit head and the change log take transaction-scoped advisory locks, so their rows commit
 * in the order they were numbered). A transaction that loses a serialization race or a deadlock is run
 * again with a jittered pause; one that keeps losing surfaces as StoreUnavailable (503, retried by clients).
 */
export class PostgresDatabase implements Port {
  readonly dialect = 'postgres' as const;
  private readonly reader: PgSql;

  constructor(readonly pool: pg.Pool) {
    this.reader = new PgSql(pool);
    // An idle client whose connection drops (database restart) must not crash the process.
    pool.on('error', () => {});
  }

  static open(options: PostgresOptions): PostgresDatabase {
    return new PostgresDatabase(openPostgres(options));
  }

  async tx<T>(fn: (sql: Sql) => Promise<T>, options: TxOptions = {}): Promise<T> {
    const retries = options.retries ?? 5;
    for (let attempt = 0; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw translate(err);
      }
      let broken = false;
      try {
        await client.query('BEGIN');
        const result = await fn(new PgSql(client));
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true;
        }
        const code = (err as { code?: string }).code ?? ((err as { cause?: { code?: string } }).cause?.code);
        if (code && RETRYABLE.has(code) && attempt < retries) {
          await pause(5 + crypto.randomInt(20 * (attempt + 1)));
          continue;
        }
        throw translate(err);
      } finally {
        client.release(broken);
      }
    }
  }

  async read<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    return fn(this.reader);
  }

  migrate(): Promise<MigrationResult> {
    return migratePostgres(this.pool);
  }

  async ping(): Promise<void> {
    await this.reader.get('SELECT 1');
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
