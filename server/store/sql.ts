import type { Dialect, MigrationResult } from '../db/database.js';

export type { Dialect };
export type Param = string | number | bigint | boolean | null;

/**
 * The one way repositories reach a database: SQL text with `?` placeholders, written once for both engines
 * (the PostgreSQL executor numbers them). Rows come back as plain objects with the column names as keys.
 */
export interface Sql {
  readonly dialect: Dialect;
  all<T>(text: string, params?: readonly Param[]): Promise<T[]>;
  get<T>(text: string, params?: readonly Param[]): Promise<T | undefined>;
  run(text: string, params?: readonly Param[]): Promise<{ changes: number }>;
}

/**
 * The storage port. `tx` is a unit of work: everything `fn` writes commits together or not at all, and write
 * transactions run one at a time (SQLite: its single writer; PostgreSQL: an advisory lock shared by every
 * replica), so a rule checked inside `fn` still holds when it commits. `fn` must do nothing but database work:
 * no network calls, no waiting on anything else (changes are published after commit). `read` runs outside any
 * write transaction and never waits for one.
 */
export interface Database {
  readonly dialect: Dialect;
  tx<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
  read<T>(fn: (sql: Sql) => Promise<T>): Promise<T>;
  migrate(): Promise<MigrationResult>;
  /** Resolves when the database answers (readiness checks). */
  ping(): Promise<void>;
  close(): Promise<void>;
}
