import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import express from 'express';
import request from 'supertest';
import { opsRoutes } from '../server/ops/ops.routes.js';
import { HttpMetrics } from '../server/ops/metrics.js';
import type { Store } from '../server/store/store.js';
import { makeTestStore } from './helpers/app.js';

/** Readiness is what a balancer asks before it sends a replica requests: it must follow the database. */
describe('readiness follows the store', () => {
  let dir: string;
  let store: Store;
  let drop: () => Promise<void>;
  let closed = false;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-ops-'));
    ({ store, drop } = await makeTestStore(dir));
  });
  after(async () => {
    if (!closed) await store.close();
    await drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const app = () => express().use(opsRoutes(store, new HttpMetrics(false)));

  test('ready once every migration of this build is applied', async () => {
    assert.deepEqual((await request(app()).get('/ready').expect(200)).body, { status: 'ready' });
  });

  test('a migration the database has not recorded: not ready', async () => {
    // As if the database were older than this build (a replica upgraded before the schema).
    const [newest] = await store.read((r) => r.sql.all<{ name: string }>('SELECT name FROM schema_migrations ORDER BY name DESC LIMIT 1'));
    await store.tx((r) => r.sql.run('DELETE FROM schema_migrations WHERE name = ?', [newest!.name]));
    const res = await request(app()).get('/ready');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body.error, { code: 'not-ready', message: '1 migration(s) not applied' });
  });

  test('a database that does not answer: not ready, and the process lives on', async () => {
    await store.close();
    closed = true;
    const res = await request(app()).get('/ready');
    assert.equal(res.status, 503);
    assert.deepEqual(res.body.error, { code: 'not-ready', message: 'database unavailable' });
    assert.equal((await request(app()).get('/health')).status, 200);
  });
});
