import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultMigrationsDir, migrate, migrationFiles, migrationsDir, openDatabase, pendingMigrations } from '../server/db/database.js';

describe('migrations', () => {
  test('both dialects ship the same migrations, under the same names', () => {
    assert.deepEqual(migrationFiles(migrationsDir('postgres')), migrationFiles(migrationsDir('sqlite')));
  });

  test('apply in order to an empty database; a re-run is a no-op', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-mig-'));
    try {
      const db = openDatabase(path.join(dir, 'm.db'));
      const files = fs.readdirSync(defaultMigrationsDir()).filter((f) => f.endsWith('.sql')).sort();
      assert.ok(files.length >= 1);
      const first = migrate(db);
      assert.deepEqual(first.applied, files);
      const schema = db.prepare('SELECT sql FROM sqlite_master ORDER BY name').pluck().all().join('\n');
      const second = migrate(db);
      assert.deepEqual(second.applied, []);
      assert.equal(second.alreadyApplied, files.length);
      assert.equal(db.prepare('SELECT sql FROM sqlite_master ORDER BY name').pluck().all().join('\n'), schema);
      assert.deepEqual(pendingMigrations(db), []);
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
      db.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a failing migration leaves nothing half-applied', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-mig-'));
    try {
      const migs = path.join(dir, 'migrations');
      fs.mkdirSync(migs);
      fs.writeFileSync(path.join(migs, '001-a.sql'), 'CREATE TABLE a (x INTEGER);');
      fs.writeFileSync(path.join(migs, '002-b.sql'), 'CREATE TABLE b (x INTEGER); INSERT INTO nope VALUES (1);');
      const db = openDatabase(path.join(dir, 'm.db'));
      assert.throws(() => migrate(db, migs), /no such table: nope/);
      assert.deepEqual(pendingMigrations(db, migs), ['002-b.sql']);
      assert.equal(db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'b'").pluck().get(), 0);
      db.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
