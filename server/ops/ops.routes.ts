import { Router } from 'express';
import { pendingMigrations, type Db } from '../db/database.js';
import { h } from '../http/handler.js';
import { errorBody } from '../http/error-handler.js';
import type { HttpMetrics } from './metrics.js';

export function opsRoutes(db: Db, metrics: HttpMetrics): Router {
  const r = Router();
  r.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/ready', (_req, res) => {
    try {
      const pending = pendingMigrations(db);
      if (pending.length > 0) {
        res.status(503).json(errorBody('not-ready', `${pending.length} migration(s) not applied`));
        return;
      }
      res.json({ status: 'ready' });
    } catch {
      res.status(503).json(errorBody('not-ready', 'database unavailable'));
    }
  });
  r.get('/metrics', h(async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  }));
  return r;
}
