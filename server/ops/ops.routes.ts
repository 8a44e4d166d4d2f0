import { Router } from 'express';
import { migrationFiles, migrationsDir } from '../db/database.js';
import { h } from '../http/handler.js';
import { errorBody } from '../http/error-handler.js';
import type { Store } from '../store/store.js';
import type { HttpMetrics } from './metrics.js';

/** This build's migrations for the store's engine that its database has not recorded. */
async function pendingMigrations(store: Store): Promise<string[]> {
  const done = await store.read((r) => r.sql.all<{ name: string }>('SELECT name FROM schema_migrations'));
  const applied = new Set(done.map((m) => m.name));
  return migrationFiles(migrationsDir(store.dialect)).filter((f) => !applied.has(f));
}

export function opsRoutes(store: Store, metrics: HttpMetrics): Router {
  const r = Router();
  r.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Asks the database on every probe: a replica whose database is gone leaves the balancer's pool.
  r.get('/ready', h(async (_req, res) => {
    let pending: string[];
    try {
      pending = await pendingMigrations(store);
    } catch {
      res.status(503).json(errorBody('not-ready', 'database unavailable'));
      return;
    }
    if (pending.length > 0) {
      res.status(503).json(errorBody('not-ready', `${pending.length} migration(s) not applied`));
      return;
    }
    res.json({ status: 'ready' });
  }));
  r.get('/metrics', h(async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.text());
  }));
  return r;
}
