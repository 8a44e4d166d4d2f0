import type pg from 'pg';
import type { Database, Sql } from '../store/sql.js';
import type { Change, ChangeFeed } from './changes.js';

/**
 * The durable side of the change feed. A writer appends the change inside the transaction that makes it
 * (`appendChange`), so it commits with the data or not at all; every process serving robots follows the log
 * (`ChangeFollower`) and republishes each change on its local ChangeFeed, where the bundle cache listens.
 * One design for both ways of running more than one process: PostgreSQL replicas are woken by NOTIFY, and
 * anything that cannot be notified (a lost connection, SQLite) catches up by reading past its last id.
 */

export const CHANGE_CHANNEL = 'enclave_changes';

export interface LoggedChange {
  id: number;
  change: Change;
}

export async function appendChange(sql: Sql, change: Change, at = new Date().toISOString()): Promise<number> {
  // Write transactions run one at a time on every engine (store/sql.ts), so a row numbered n + 1 never commits
  // before row n: a follower that has read up to n never finds a smaller id appear behind it later.
  const row = await sql.get<{ id: number | string }>(
    'INSERT INTO change_log (id, at, change) SELECT coalesce(max(id), 0) + 1, ?, ? FROM change_log RETURNING id',
    [at, JSON.stringify(change)],
  );
  const id = Number(row!.id);
  // Delivered when (and only if) the transaction commits.
  if (sql.dialect === 'postgres') await sql.run('SELECT pg_notify(?, ?)', [CHANGE_CHANNEL, String(id)]);
  return id;
}

export async function changesSince(sql: Sql, afterId: number, limit = 1000): Promise<LoggedChange[]> {
  const rows = await sql.all<{ id: number | string; change: string }>('SELECT id, change FROM change_log WHERE id > ? ORDER BY id LIMIT ?', [afterId, limit]);
  return rows.map((r) => ({ id: Number(r.id), change: JSON.parse(r.change) as Change }));
}

export async function lastChangeId(sql: Sql): Promise<number> {
  const row = await sql.get<{ last: number | string | null }>('SELECT max(id) AS last FROM change_log');
  return Number(row?.last ?? 0);
}

/**
 * Drops rows older than `before` (ISO time); a follower away longer than that resynchronizes. The newest row
 * always stays: ids continue from it, so they never start again below what a follower has seen.
 */
export async function trimChanges(sql: Sql, before: string): Promise<number> {
  return (await sql.run('DELETE FROM change_log WHERE at < ? AND id < (SELECT max(id) FROM change_log)', [before])).changes;
}

export interface FollowerOptions {
  /** Opens the connection that LISTENs (PostgreSQL); absent: poll only. */
  listen?: () => Promise<pg.Client>;
  /** Safety net and the only wake-up without LISTEN. */
  pollMs?: number;
  /** Pause before reconnecting a lost LISTEN connection (doubled up to 5 s). */
  reconnectMs?: number;
  onError?: (err: unknown) => void;
}

/**
 * Follows the change log from the moment it starts (a starting process has no cache that older changes could
 * have made stale) and republishes every change, in order, on `feed`. When it finds that rows it never saw
 * were trimmed, it publishes `{ kind: 'resync' }`: drop every cache.
 */
export class ChangeFollower {
  private lastId = 0;
  private timer?: NodeJS.Timeout;
  private client?: pg.Client;
  private closed = false;
  private reading?: Promise<void>;
  private again = false;
  private reconnectDelay: number;

  constructor(
    private readonly db: Database,
    private readonly feed: ChangeFeed,
    private readonly options: FollowerOptions = {},
  ) {
    this.reconnectDelay = options.reconnectMs ?? 250;
  }

  get position(): number {
    return this.lastId;
  }

  async start(): Promise<void> {
    this.lastId = await this.db.read(lastChangeId);
    if (this.options.listen) await this.connect();
    this.timer = setInterval(() => this.wake(), this.options.pollMs ?? 1000);
    this.timer.unref();
  }

  /** Reads what is new; concurrent wake-ups fold into one more read after the current one. */
  wake(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = (async () => {
      try {
        do {
          this.again = false;
          await this.catchUp();
        } while (this.again && !this.closed);
      } catch (err) {
        this.options.onError?.(err);
      } finally {
        this.reading = undefined;
      }
    })();
    return this.reading;
  }

  private async catchUp(): Promise<void> {
    for (;;) {
      const rows = await this.db.read((sql) => changesSince(sql, this.lastId));
      // Ids are contiguous (each is the previous + 1, and a rolled-back row takes none with it): a jump means
      // rows were trimmed before this follower read them.
      if (rows.length > 0 && rows[0]!.id !== this.lastId + 1) this.feed.publish({ kind: 'resync' });
      for (const { id, change } of rows) {
        if (this.closed) return;
        this.lastId = id;
        this.feed.publish(change);
      }
      if (rows.length < 1000 || this.closed) return;
    }
  }

  private async connect(): Promise<void> {
    try {
      const client = await this.options.listen!();
      this.client = client;
      client.on('notification', () => void this.wake());
      const lost = (err?: unknown) => {
        if (this.client !== client) return;
        this.client = undefined;
        if (err) this.options.onError?.(err);
        client.removeAllListeners('notification');
        client.end().catch(() => {});
        if (!this.closed) setTimeout(() => void this.connect(), this.reconnectDelay).unref();
      };
      client.on('error', lost);
      client.on('end', () => lost());
      await client.query(`LISTEN ${CHANGE_CHANNEL}`);
      this.reconnectDelay = this.options.reconnectMs ?? 250;
      // Whatever committed while we were not listening.
      await this.wake();
    } catch (err) {
      this.options.onError?.(err);
      this.reconnectDelay = Math.min(this.reconnectDelay * 2, 5000);
      if (!this.closed) setTimeout(() => void this.connect(), this.reconnectDelay).unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
    await this.reading;
  }
}
