/**
 * Group commit (`Store.grouped`): units asked for at the same moment share one transaction, yet each keeps the
 * meaning of a `tx` of its own. Runs on the engine the suite runs on (SQLite, or PostgreSQL in the matrix).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AuditService } from '../server/audit/audit.service.js';
import type { Change } from '../server/events/changes.js';
import { UniqueViolation } from '../server/store/errors.js';
import type { Repos, Store } from '../server/store/store.js';
import { makeTestStore, TEST_STORE } from './helpers/app.js';

const insertUser = (r: Repos, name: string) =>
  r.sql.run("INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, 'member', 'x', '2026-01-01', '2026-01-01')", [name]);
const usersLike = async (store: Store, prefix: string) =>
  (await store.read((r) => r.sql.all<{ name: string }>('SELECT name FROM users WHERE name LIKE ? ORDER BY name', [`${prefix}%`]))).map((u) => u.name);

describe(`grouped units of work (${TEST_STORE})`, () => {
  let dir: string;
  let store: Store;
  let drop: () => Promise<void>;
  /** Transactions the engine was asked for since the last reset: what grouping saves. */
  let transactions = 0;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-group-'));
    ({ store, drop } = await makeTestStore(dir));
    const tx = store.db.tx.bind(store.db);
    store.db.tx = (fn) => {
      transactions++;
      return tx(fn);
    };
  });
  after(async () => {
    await store.close();
    await drop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('units asked for in one turn commit in one transaction, in order, each seeing those before it', async () => {
    transactions = 0;
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        store.grouped(async (r) => {
          await insertUser(r, `order-${String(i).padStart(2, '0')}`);
          return Number((await r.sql.get<{ n: number | string }>("SELECT count(*) AS n FROM users WHERE name LIKE 'order-%'"))!.n);
        }),
      ),
    );
    assert.deepEqual(results, Array.from({ length: 50 }, (_, i) => i + 1));
    assert.equal(transactions, 1);
    assert.equal((await usersLike(store, 'order-')).length, 50);
  });

  test('audit entries appended by one group, and again after a member failed, form one verifiable chain', async () => {
    const audit = new AuditService(store);
    const before = await audit.verify();
    assert.equal(before.ok, true);
    transactions = 0;
    const clean = await Promise.all(Array.from({ length: 40 }, (_, i) => audit.recordAlone({ actor: `r${i}`, actorKind: 'robot', action: 'bundle.deliver' })));
    assert.equal(transactions, 1, 'one transaction for forty entries');
    assert.deepEqual(clean, Array.from({ length: 40 }, (_, i) => before.entries + 1 + i), 'consecutive ids, in the order asked');
    // A member that throws after appending: the group rolls back, every member runs again in its own unit of work.
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        store.grouped(async (r) => {
          const id = await audit.record(r, { actor: `s${i}`, actorKind: 'robot', action: 'bundle.deliver' });
          if (i === 3) throw new Error('refused after appending');
          return id;
        }),
      ),
    );
    assert.deepEqual(
      outcomes.map((o) => o.status),
      outcomes.map((_, i) => (i === 3 ? 'rejected' : 'fulfilled')),
    );
    const after = await audit.verify();
    assert.equal(after.ok, true, JSON.stringify(after));
    assert.equal(after.entries, before.entries + 40 + 9);
  });

  test('a member that throws fails alone: the others commit, its writes do not', async () => {
    transactions = 0;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) =>
        store.grouped(async (r) => {
          await insertUser(r, `fail-${i}`);
          if (i === 2) throw new Error('member 2 changed its mind');
          return i;
        }),
      ),
    );
    assert.deepEqual(
      outcomes.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as Error).message)),
      [0, 1, 'member 2 changed its mind', 3, 4],
    );
    assert.deepEqual(await usersLike(store, 'fail-'), ['fail-0', 'fail-1', 'fail-3', 'fail-4']);
    // The group, rolled back, then each member alone.
    assert.equal(transactions, 6);
  });

  test('two members that conflict: the first wins, the second gets the neutral error, as two transactions would', async () => {
    const outcomes = await Promise.allSettled([
      store.grouped((r) => insertUser(r, 'twice')),
      store.grouped((r) => insertUser(r, 'twice')),
      store.grouped((r) => insertUser(r, 'once')),
    ]);
    assert.equal(outcomes[0]!.status, 'fulfilled');
    assert.equal(outcomes[1]!.status, 'rejected');
    assert.ok((outcomes[1] as PromiseRejectedResult).reason instanceof UniqueViolation);
    assert.equal(outcomes[2]!.status, 'fulfilled');
    assert.deepEqual(await usersLike(store, 'twice'), ['twice']);
    assert.deepEqual(await usersLike(store, 'once'), ['once']);
  });

  test('a published change is heard on the local feed before the unit resolves', async () => {
    const heard: Change[] = [];
    const stop = store.changes.subscribe((c) => heard.push(c));
    try {
      await Promise.all([
        store.grouped((r) => r.publish({ kind: 'robot', robot: 'heard-a' })),
        store.grouped(async (r) => {
          await r.publish({ kind: 'robot', robot: 'heard-b' });
        }).then(() => assert.ok(heard.some((c) => c.kind === 'robot' && c.robot === 'heard-b'), 'heard before resolving')),
      ]);
      assert.deepEqual(heard.filter((c) => c.kind === 'robot').map((c) => (c as { robot: string }).robot), ['heard-a', 'heard-b']);
    } finally {
      stop();
    }
  });

  test('more units than one group holds: every one commits, in groups of at most 200', async () => {
    transactions = 0;
    await Promise.all(Array.from({ length: 450 }, (_, i) => store.grouped((r) => insertUser(r, `many-${String(i).padStart(3, '0')}`))));
    assert.equal((await usersLike(store, 'many-')).length, 450);
    assert.equal(transactions, 3);
  });

  test('units asked for while a group commits form the next group', async () => {
    transactions = 0;
    const first = Array.from({ length: 10 }, (_, i) => store.grouped((r) => insertUser(r, `wave1-${i}`)));
    // Asked for after the first group started (its turn has passed), before it resolved.
    await new Promise((resolve) => setImmediate(resolve));
    const second = Array.from({ length: 10 }, (_, i) => store.grouped((r) => insertUser(r, `wave2-${i}`)));
    await Promise.all([...first, ...second]);
    assert.equal((await usersLike(store, 'wave')).length, 20);
    assert.ok(transactions <= 2, `${transactions} transactions for two waves`);
  });

  test('close waits for the units already asked for', async () => {
    const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-group-close-'));
    const other = await makeTestStore(dir2);
    const pending = Array.from({ length: 5 }, (_, i) => other.store.grouped((r) => insertUser(r, `closing-${i}`)));
    await other.store.close();
    await Promise.all(pending);
    await other.drop();
    fs.rmSync(dir2, { recursive: true, force: true });
  });
});
