/**
 * SQLite's plans for the queries a certificate request runs once per robot: without statistics SQLite may walk
 * a whole keystore's certificates to spare a sort (it did, and issuance for 10,000 robots ran at a fifth of its
 * speed). The repositories' own SQL is recorded and explained against the migrated schema.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IdentitiesRepo } from '../server/identities/identities.repo.js';
import { openDatabase, migrate, migrationsDir } from '../server/db/database.js';
import type { Param, Sql } from '../server/store/sql.js';

/** A Sql that only remembers what it was asked. */
class Recorder implements Sql {
  readonly dialect = 'sqlite' as const;
  readonly texts: string[] = [];
  async all<T>(text: string): Promise<T[]> {
    this.texts.push(text);
    return [];
  }
  async get<T>(text: string): Promise<T | undefined> {
    this.texts.push(text);
    return undefined;
  }
  async run(text: string, _params?: readonly Param[]): Promise<{ changes: number }> {
    this.texts.push(text);
    return { changes: 0 };
  }
}

test('per-robot identity lookups use the index on robot, never a walk over the keystore', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-plans-'));
  const db = openDatabase(path.join(dir, 'plans.db'));
  t.after(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  migrate(db, migrationsDir('sqlite'));
  const plan = (text: string) =>
    (db.prepare(`EXPLAIN QUERY PLAN ${text}`).all(...Array((text.match(/\?/g) ?? []).length).fill('x')) as { detail: string }[])
      .map((r) => r.detail)
      .join(' | ');

  const cases: [string, (repo: IdentitiesRepo) => Promise<unknown>, RegExp][] = [
    ['liveOf', (repo) => repo.liveOf('r', 'ks', '/e'), /USING INDEX robot_identities_robot \(robot=\? AND keystore=\? AND enclave=\? AND status=\?\)/],
    ['current', (repo) => repo.current('r', 'ks', '/e'), /USING INDEX robot_identities_robot \(robot=\? AND keystore=\? AND enclave=\? AND status=\?\)/],
    ['unrevokedOfRobot', (repo) => repo.unrevokedOfRobot('r'), /USING INDEX robot_identities_robot \(robot=\?\)/],
    ['unrevokedOfEnclave', (repo) => repo.unrevokedOfEnclave('ks', '/e'), /USING INDEX robot_identities_enclave \(keystore=\? AND enclave=\?/],
  ];
  for (const [name, call, expected] of cases) {
    const recorder = new Recorder();
    await call(new IdentitiesRepo(recorder));
    assert.equal(recorder.texts.length, 1, name);
    const found = plan(recorder.texts[0]!);
    assert.match(found, expected, `${name}: ${found}`);
    assert.doesNotMatch(found, /SCAN robot_identities|autoindex_robot_identities_1 \(keystore=\?\)$/, `${name}: ${found}`);
  }
});
