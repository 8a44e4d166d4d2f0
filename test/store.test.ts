import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { appendChange, ChangeFollower, trimChanges } from '../server/events/change-log.js';
import { ChangeFeed, type Change } from '../server/events/changes.js';
import { ConstraintViolation, ForeignKeyViolation, StoreUnavailable, UniqueViolation } from '../server/store/errors.js';
import { PostgresDatabase, toPostgres } from '../server/store/postgres.js';
import type { Database } from '../server/store/sql.js';
import { SqliteDatabase } from '../server/store/sqlite.js';
import { freshDatabase, NO_POSTGRES, type TestDatabase } from './helpers/postgres.js';

/** Resolves with the first `n` changes published on `feed`, in the order they were published. */
function collect(feed: ChangeFeed, n: number, timeoutMs = 10_000): Promise<Change[]> {
  const seen: Change[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${seen.length} of ${n} changes arrived`)), timeoutMs);
    const stop = feed.subscribe((c) => {
      seen.push(c);
      if (seen.length === n) {
        clearTimeout(timer);
        stop();
        resolve(seen);
      }
    });
  });
}

const robot = (i: number): Change => ({ kind: 'robot', robot: `r${i}` });
const insertUser = (name: string, role = 'admin') => [
  "INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, 'x', '2026-01-01', '2026-01-01')",
  [name, role],
] as const;

interface Engine {
  name: string;
  skip: string | false;
  /**
   * Two handles on one database, as two processes (replicas) would hold. `writer2`: the handle the second
   * process writes through; for SQLite that is `a` again, since two writer connections in one process would
   * wait for each other inside one event loop (separate processes wait in SQLite's busy handler instead).
   */
  open(): Promise<{ a: Database; b: Database; writer2: Database; listen?: () => Promise<pg.Client>; cleanup(): Promise<void> }>;
}

const engines: Engine[] = [
  {
    name: 'SQLite',
    skip: false,
    async open() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-store-'));
      const a = SqliteDatabase.open(path.join(dir, 's.db'));
      await a.migrate();
      const b = SqliteDatabase.open(path.join(dir, 's.db'));
      return {
        a,
        b,
        writer2: a,
        async cleanup() {
          await a.close();
          await b.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'PostgreSQL',
    skip: NO_POSTGRES,
    async open() {
      const db: TestDatabase = await freshDatabase('store');
      const a = PostgresDatabase.open({ url: db.url });
      await a.migrate();
      const b = PostgresDatabase.open({ url: db.url });
      return {
        a,
        b,
        writer2: b,
        listen: async () => {
          const c = new pg.Client({ connectionString: db.url, application_name: 'enclave-listener' });
          await c.connect();
          return c;
        },
        async cleanup() {
          await a.close();
          await b.close();
          await db.drop();
        },
      };
    },
  },
];

for (const engine of engines) {
  describe(`store port on ${engine.name}`, { skip: engine.skip }, () => {
    let h: Awaited<ReturnType<Engine['open']>>;
    before(async () => {
      h = await engine.open();
    });
    after(async () => {
      await h?.cleanup();
    });

    test('a transaction commits all it wrote, or nothing when its function throws', async () => {
      await h.a.tx(async (sql) => {
        await sql.run(...insertUser('committed'));
      });
      await assert.rejects(
        h.a.tx(async (sql) => {
          await sql.run(...insertUser('rolled-back'));
          throw new Error('changed my mind');
        }),
        /changed my mind/,
      );
      const names = await h.b.read((sql) => sql.all<{ name: string }>('SELECT name FROM users ORDER BY name'));
      assert.deepEqual(names.map((r) => r.name), ['committed']);
    });

    test('engine errors become neutral ones: unique, foreign key, check, append-only trigger', async () => {
      await assert.rejects(h.a.tx((sql) => sql.run(...insertUser('committed'))), UniqueViolation);
      await assert.rejects(
        h.a.tx((sql) => sql.run(`INSERT INTO grants (id, "user", keystore, pattern, capabilities, created_by, created_at)
          VALUES ('g1', 'nobody', 'nothing', '/**', '[]', 'admin', '2026-01-01')`)),
        ForeignKeyViolation,
      );
      await assert.rejects(h.a.tx((sql) => sql.run(...insertUser('bad-role', 'owner'))), ConstraintViolation);
      await h.a.tx((sql) => sql.run(`INSERT INTO audit_log (id, at, actor, actor_kind, action, result, prev_hash, hash)
        VALUES (1, '2026-01-01', 'admin', 'user', 'test', 'success', 'g', 'h')`));
      await assert.rejects(h.a.tx((sql) => sql.run("UPDATE audit_log SET actor = 'x'")), ConstraintViolation);
    });

    test('a read does not see what an open transaction has not committed yet', async () => {
      await h.a.tx(async (sql) => {
        await sql.run(...insertUser('pending'));
        assert.ok(await sql.get('SELECT 1 FROM users WHERE name = ?', ['pending']), 'the transaction sees its own write');
        assert.equal(await h.a.read((r) => r.get('SELECT 1 FROM users WHERE name = ?', ['pending'])), undefined);
      });
      assert.ok(await h.a.read((r) => r.get('SELECT 1 FROM users WHERE name = ?', ['pending'])));
    });

    test('write transactions run one at a time: a rule checked inside holds at commit (no write skew)', async () => {
      await h.a.tx(async (sql) => {
        await sql.run(...insertUser('admin-1'));
        await sql.run(...insertUser('admin-2'));
      });
      // Each removes a different admin if another would remain: run together, only one may succeed.
      const removeIfNotLast = (db: Database, name: string) =>
        db.tx(async (sql) => {
          const n = await sql.get<{ n: number | string }>("SELECT count(*) AS n FROM users WHERE name LIKE 'admin-%'");
          await new Promise((r) => setTimeout(r, 20)); // the other transaction gets every chance to interleave
          if (Number(n!.n) <= 1) return false;
          await sql.run('DELETE FROM users WHERE name = ?', [name]);
          return true;
        });
      const results = await Promise.all([removeIfNotLast(h.a, 'admin-1'), removeIfNotLast(h.writer2, 'admin-2')]);
      assert.deepEqual(results.sort(), [false, true]);
      const left = await h.b.read((sql) => sql.all("SELECT name FROM users WHERE name LIKE 'admin-%'"));
      assert.equal(left.length, 1);
    });

    test('concurrent writers on two handles: change ids are contiguous and a follower sees every change in order', async () => {
      const feed = new ChangeFeed();
      const follower = new ChangeFollower(h.b, feed, { listen: h.listen, pollMs: h.listen ? 5_000 : 50 });
      await follower.start();
      const start = follower.position;
      try {
        const arriving = collect(feed, 60);
        await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? h.a : h.writer2).tx((sql) => appendChange(sql, robot(i)))));
        const seen = await arriving;
        const ids = (await h.a.read((sql) => sql.all<{ id: number | string }>('SELECT id FROM change_log WHERE id > ? ORDER BY id', [start]))).map((r) => Number(r.id));
        assert.deepEqual(ids, Array.from({ length: 60 }, (_, i) => start + i + 1), 'no gap, no duplicate');
        const order = (await h.a.read((sql) => sql.all<{ change: string }>('SELECT change FROM change_log WHERE id > ? ORDER BY id', [start]))).map((r) => JSON.parse(r.change));
        assert.deepEqual(seen, order, 'published in commit order');
        assert.equal(new Set(seen.map((c) => (c as { robot: string }).robot)).size, 60);
      } finally {
        await follower.close();
      }
    });

    test('a change rolled back with its transaction is never published', async () => {
      const feed = new ChangeFeed();
      const follower = new ChangeFollower(h.b, feed, { listen: h.listen, pollMs: 50 });
      await follower.start();
      try {
        const arriving = collect(feed, 1);
        await assert.rejects(h.a.tx(async (sql) => {
          await appendChange(sql, robot(1000));
          throw new Error('abort');
        }));
        await h.a.tx((sql) => appendChange(sql, robot(1001)));
        assert.deepEqual(await arriving, [robot(1001)]);
      } finally {
        await follower.close();
      }
    });

    test('a follower that missed trimmed changes publishes resync; the newest row is never trimmed', async () => {
      const feed = new ChangeFeed();
      const follower = new ChangeFollower(h.b, feed, { pollMs: 3_600_000 });
      await follower.start();
      try {
        await h.a.tx(async (sql) => {
          await appendChange(sql, robot(1), '2000-01-01T00:00:00.000Z');
          await appendChange(sql, robot(2), '2000-01-01T00:00:00.000Z');
          await appendChange(sql, robot(3), '2000-01-01T00:00:00.000Z');
        });
        const trimmed = await h.a.tx((sql) => trimChanges(sql, '2001-01-01T00:00:00.000Z'));
        assert.equal(trimmed, 2);
        const left = await h.a.read((sql) => sql.get<{ n: number | string }>("SELECT count(*) AS n FROM change_log WHERE at < '2001'"));
        assert.equal(Number(left!.n), 1, 'the newest row stays so that ids keep growing');
        const arriving = collect(feed, 2);
        await follower.wake();
        assert.deepEqual(await arriving, [{ kind: 'resync' }, robot(3)]);
      } finally {
        await follower.close();
      }
    });
  });
}

describe('store port on PostgreSQL: failures', { skip: NO_POSTGRES }, () => {
  let db: TestDatabase;
  let a: PostgresDatabase;
  before(async () => {
    db = await freshDatabase('store_failures');
    a = PostgresDatabase.open({ url: db.url });
    await a.migrate();
  });
  after(async () => {
    await a?.close();
    await db?.drop();
  });

  test('the LISTEN connection killed: the follower reconnects and delivers what committed meanwhile, in order', async () => {
    const feed = new ChangeFeed();
    const follower = new ChangeFollower(a, feed, {
      pollMs: 3_600_000, // only NOTIFY and the catch-up after reconnecting may deliver
      reconnectMs: 200,
      listen: async () => {
        const c = new pg.Client({ connectionString: db.url, application_name: 'enclave-listener' });
        await c.connect();
        return c;
      },
    });
    await follower.start();
    try {
      const first = collect(feed, 1);
      await a.tx((sql) => appendChange(sql, robot(1)));
      assert.deepEqual(await first, [robot(1)]);
      const rest = collect(feed, 5);
      // The server ends the listener's session (as a database restart or a failover would) while writes go on.
      await a.read((sql) => sql.all("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'enclave-listener'"));
      for (let i = 2; i <= 6; i++) await a.tx((sql) => appendChange(sql, robot(i)));
      assert.deepEqual(await rest, [2, 3, 4, 5, 6].map(robot));
    } finally {
      await follower.close();
    }
  });

  test('a database that cannot be reached is StoreUnavailable, fast', async () => {
    const url = new URL(db.url);
    url.port = '1'; // nothing listens there
    const gone = PostgresDatabase.open({ url: url.toString() });
    try {
      await assert.rejects(gone.tx((sql) => sql.run('SELECT 1')), StoreUnavailable);
      await assert.rejects(gone.ping(), StoreUnavailable);
    } finally {
      await gone.close();
    }
  });
});

test('placeholders are numbered for PostgreSQL, except inside quotes', () => {
  assert.equal(toPostgres(`SELECT '?' AS q, "a?b" FROM t WHERE x = ? AND y IN (?, ?)`), `SELECT '?' AS q, "a?b" FROM t WHERE x = $1 AND y IN ($2, $3)`);
});

test('the error renderer answers a lost database 503 with Retry-After and a uniqueness race 409, naming no engine detail', async () => {
  const { default: express } = await import('express');
  const { default: request } = await import('supertest');
  const { default: pino } = await import('pino');
  const { errorHandler } = await import('../server/http/error-handler.js');
  const lines: string[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const app = express();
  app.get('/down', () => {
    throw new StoreUnavailable('database unavailable (57P01)', { cause: new Error('terminating connection due to administrator command at 10.0.0.7') });
  });
  app.get('/race', () => {
    throw new UniqueViolation('unique violation (users_pkey)');
  });
  app.use(errorHandler(logger));
  const down = await request(app).get('/down');
  assert.equal(down.status, 503);
  assert.equal(down.headers['retry-after'], '5');
  assert.deepEqual(down.body, { error: { code: 'database-unavailable', message: 'the database is unavailable, retry later' } });
  const race = await request(app).get('/race');
  assert.equal(race.status, 409);
  assert.doesNotMatch(JSON.stringify(race.body), /users_pkey/);
  assert.match(lines.join(''), /57P01/, 'the reason is in the server log');
});
