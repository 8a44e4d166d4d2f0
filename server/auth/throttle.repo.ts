import type { Sql } from '../store/sql.js';

/** Limiter state by key (migration 008-throttles): read and written inside one unit of work. */
export class ThrottleRepo {
  constructor(private readonly sql: Sql) {}

  async get<T>(key: string, nowMs: number): Promise<T | undefined> {
    const row = await this.sql.get<{ state: string }>('SELECT state FROM throttles WHERE key = ? AND expires_at > ?', [key, nowMs]);
    return row ? (JSON.parse(row.state) as T) : undefined;
  }

  async put(key: string, state: unknown, expiresAtMs: number): Promise<void> {
    await this.sql.run(
      'INSERT INTO throttles (key, state, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at',
      [key, JSON.stringify(state), Math.ceil(expiresAtMs)],
    );
  }

  async delete(key: string): Promise<void> {
    await this.sql.run('DELETE FROM throttles WHERE key = ?', [key]);
  }

  async sweep(nowMs: number): Promise<number> {
    return (await this.sql.run('DELETE FROM throttles WHERE expires_at <= ?', [nowMs])).changes;
  }
}
