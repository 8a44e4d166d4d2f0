import pg from 'pg';
import type { MigrationResult } from '../db/database.js';
import { migratePostgres, openPostgres, type PostgresOptions } from '../db/postgres.js';
import { ConstraintViolation, ForeignKeyViolation, InvalidValue, StoreError, StoreUnavailable, UniqueViolation } from './errors.js';
import type { Database as Port, Param, Sql } from './sql.js';

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
const NETWORK = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

function translate(err: unknown): unknown {
  if (err instanceof StoreError) return err;
  const e = err as { code?: string; message?: string; constraint?: string };
  const code = e?.code;
  if (code === '23505') return new UniqueViolation(`unique violation (${e.constraint ?? 'key'})`, { cause: err });
  if (code === '23503') return new ForeignKeyViolation(`foreign key violation (${e.constraint ?? 'key'})`, { cause: err });
  // 22021: a NUL or an invalid byte sequence in text; 22P05: an untranslatable character.
  if (code === '22021' || code === '22P05') return new InvalidValue(`value not storable (${code})`, { cause: err });
  if (code === '23514' || code === '23502' || code === 'P0001') return new ConstraintViolation(e.message ?? 'constraint violation', { cause: err });
  if (code && (UNAVAILABLE.test(code) || NETWORK.has(code))) return new StoreUnavailable(`database unavailable (${code})`, { cause: err });
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

/**
 * Every write transaction takes this transaction-scoped advisory lock first, on every replica: writes are
 * serialized as SQLite serializes them. What that buys: a rule checked inside the transaction (the last
 * administrator, an enrollment token not yet burnt, a fresh CSR key) still holds at commit, under READ
 * COMMITTED, with no write skew; audit rows and change rows get consecutive ids in commit order. What it costs:
 * one writer at a time across replicas. Writes are short and few next to robots' reads (served from each
 * replica's cache), so this is not the limit.
 */
const WRITER_LOCK = 0x656e636c2d7772; // "encl-wr"

/**
 * The replicated store: a pool per replica, READ COMMITTED, writes serialized by WRITER_LOCK. A lost database
 * surfaces as StoreUnavailable (503: clients retry, agents keep their enclaves).
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

  async tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw translate(err);
    }
    let broken = false;
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [WRITER_LOCK]);
      const result = await fn(new PgSql(client));
      await client.query('COMMIT');
      return result;
    } catch (err) {
      try {
        await client.query('ROLLBACK');
      } catch {
        broken = true;
      }
      throw translate(err);
    } finally {
      client.release(broken);
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

  /** A connection of its own, outside the pool, for LISTEN (a pooled one would be handed to others). */
  async listener(): Promise<pg.Client> {
    const client = new pg.Client({ ...this.pool.options });
    try {
      await client.connect();
    } catch (err) {
      throw translate(err);
    }
    return client;
  }

  close(): Promise<void> {
    return this.pool.end();
  }
}
