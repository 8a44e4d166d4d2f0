import type { MigrationResult } from '../db/database.js';
import type { FollowerOptions } from '../events/change-log.js';
import { PostgresDatabase } from './postgres.js';
import { SqliteDatabase } from './sqlite.js';
import { Store } from './store.js';

export type StoreLocation = { sqliteFile: string } | { url: string; passwordFile?: string; poolSize?: number };

/**
 * Opens, migrates and starts following the store: the SQLite file (one process, or the workers of one host, each
 * woken by its siblings through `onPublished`) or PostgreSQL (any number of replicas, each woken by LISTEN on the
 * change channel). Polling every `pollMs` is only the safety net.
 */
export async function openStore(
  where: StoreLocation,
  options: { now?: () => Date; onFollowError?: (err: unknown) => void; pollMs?: number; onPublished?: () => void } = {},
): Promise<{ store: Store; migrations: MigrationResult }> {
  let follower: FollowerOptions;
  let store: Store;
  if ('sqliteFile' in where) {
    const db = SqliteDatabase.open(where.sqliteFile);
    follower = { pollMs: options.pollMs ?? 1000, onError: options.onFollowError };
    store = new Store(db, { now: options.now, follower, onPublished: options.onPublished });
  } else {
    const db = PostgresDatabase.open({ url: where.url, passwordFile: where.passwordFile, max: where.poolSize });
    follower = { listen: () => db.listener(), pollMs: options.pollMs ?? 5000, onError: options.onFollowError };
    store = new Store(db, { now: options.now, follower, onPublished: options.onPublished });
  }
  try {
    return { store, migrations: await store.start() };
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}
