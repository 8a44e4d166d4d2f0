import type { Role } from '../auth/principal.js';
import type { Sql } from '../store/sql.js';

interface UserRow {
  name: string;
  role: string;
  password_hash: string;
  token_epoch: number | string;
  created_at: string;
  updated_at: string;
}

export interface User {
  name: string;
  role: Role;
  passwordHash: string;
  tokenEpoch: number;
  createdAt: string;
  updatedAt: string;
}

const toUser = (r: UserRow): User => ({
  name: r.name,
  role: r.role as Role,
  passwordHash: r.password_hash,
  tokenEpoch: Number(r.token_epoch),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

const COLUMNS = 'name, role, password_hash, token_epoch, created_at, updated_at';

export class UsersRepo {
  constructor(private readonly sql: Sql) {}

  async get(name: string): Promise<User | undefined> {
    const row = await this.sql.get<UserRow>(`SELECT ${COLUMNS} FROM users WHERE name = ?`, [name]);
    return row && toUser(row);
  }

  /** By name, compared as code points: PostgreSQL's ORDER BY follows the database's locale, SQLite's does not. */
  async list(): Promise<User[]> {
    const users = (await this.sql.all<UserRow>(`SELECT ${COLUMNS} FROM users`)).map(toUser);
    return users.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async count(): Promise<number> {
    const row = await this.sql.get<{ n: number | string }>('SELECT count(*) AS n FROM users');
    return Number(row?.n ?? 0);
  }

  async countAdmins(): Promise<number> {
    const row = await this.sql.get<{ n: number | string }>("SELECT count(*) AS n FROM users WHERE role = 'admin'");
    return Number(row?.n ?? 0);
  }

  async insert(u: { name: string; role: Role; passwordHash: string; at: string }): Promise<boolean> {
    const r = await this.sql.run(
      `INSERT INTO users (name, role, password_hash, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
      [u.name, u.role, u.passwordHash, u.at, u.at],
    );
    return r.changes === 1;
  }

  async update(name: string, patch: { role?: Role; passwordHash?: string; bumpEpoch: boolean; at: string }): Promise<void> {
    await this.sql.run(
      `UPDATE users SET role = coalesce(?, role), password_hash = coalesce(?, password_hash),
        token_epoch = token_epoch + ?, updated_at = ? WHERE name = ?`,
      [patch.role ?? null, patch.passwordHash ?? null, patch.bumpEpoch ? 1 : 0, patch.at, name],
    );
  }

  async delete(name: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM users WHERE name = ?', [name])).changes === 1;
  }
}
