import type { MigrationResult } from '../db/database.js';
import type { FollowerOptions } from '../events/change-log.js';
import { PostgresDatabase } from './postgres.js';
import { SqliteDatabase } from './sqlite.js';
import { Store } from './store.js';

export type StoreLocation = { sqliteFile: string } | { url: string; passwordFile?: string; poolSize?: number };

/**
 * Opens, migrates and starts following the store: the SQLite file (one process) or PostgreSQL (any number of
 * replicas, each woken by LISTEN on the change channel; polling is only the safety net there).
 */
export async function openStore(
  where: StoreLocation,
  options: { now?: () => Date; onFollowError?: (err: unknown) => void; pollMs?: number } = {},
): Promise<{ store: Store; migrations: MigrationResult }> {
  let follower: FollowerOptions;
  let store: Store;
  if ('sqliteFile' in where) {
    const db = SqliteDatabase.open(where.sqliteFile);
    follower = { pollMs: options.pollMs ?? 1000, onError: options.onFollowError };
    store = new Store(db, { now: options.now, follower });
  } else {
    const db = PostgresDatabase.open({ url: where.url, passwordFile: where.passwordFile, max: where.poolSize });
    follower = { listen: () => db.listener(), pollMs: options.pollMs ?? 5000, onError: options.onFollowError };
    store = new Store(db, { now: options.now, follower });
  }
  try {
    return { store, migrations: await store.start() };
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}
