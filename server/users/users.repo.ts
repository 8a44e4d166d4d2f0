import type { Db } from '../db/database.js';
import type { Role } from '../auth/principal.js';

interface UserRow {
  name: string;
  role: string;
  password_hash: string;
  token_epoch: number;
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
  tokenEpoch: r.token_epoch,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export class UsersRepo {
  private readonly getStmt;
  constructor(private readonly db: Db) {
    this.getStmt = db.prepare('SELECT * FROM users WHERE name = ?');
  }

  get(name: string): User | undefined {
    const row = this.getStmt.get(name) as UserRow | undefined;
    return row && toUser(row);
  }

  list(): User[] {
    return (this.db.prepare('SELECT * FROM users ORDER BY name').all() as UserRow[]).map(toUser);
  }

  count(): number {
    return this.db.prepare('SELECT count(*) FROM users').pluck().get() as number;
  }

  countAdmins(): number {
    return this.db.prepare("SELECT count(*) FROM users WHERE role = 'admin'").pluck().get() as number;
  }

  insert(u: { name: string; role: Role; passwordHash: string; at: string }): boolean {
    const r = this.db
      .prepare(`INSERT INTO users (name, role, password_hash, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`)
      .run(u.name, u.role, u.passwordHash, u.at, u.at);
    return r.changes === 1;
  }

  update(name: string, patch: { role?: Role; passwordHash?: string; bumpEpoch: boolean; at: string }): void {
    this.db
      .prepare(`UPDATE users SET role = coalesce(@role, role), password_hash = coalesce(@hash, password_hash),
        token_epoch = token_epoch + @bump, updated_at = @at WHERE name = @name`)
      .run({ name, role: patch.role ?? null, hash: patch.passwordHash ?? null, bump: patch.bumpEpoch ? 1 : 0, at: patch.at });
  }

  delete(name: string): boolean {
    return this.db.prepare('DELETE FROM users WHERE name = ?').run(name).changes === 1;
  }
}
