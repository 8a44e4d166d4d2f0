import type { Db } from '../db/database.js';
import type { Capability, Grant, Labels } from '../acl/acl.js';

interface GrantRow {
  id: string;
  user: string;
  keystore: string;
  pattern: string;
  capabilities: string;
  robot_selector: string | null;
  created_by: string;
  created_at: string;
}

export interface StoredGrant extends Grant {
  createdBy: string;
  createdAt: string;
}

const toGrant = (r: GrantRow): StoredGrant => ({
  id: r.id,
  user: r.user,
  keystore: r.keystore,
  pattern: r.pattern,
  capabilities: JSON.parse(r.capabilities) as Capability[],
  ...(r.robot_selector ? { robotSelector: JSON.parse(r.robot_selector) as Labels } : {}),
  createdBy: r.created_by,
  createdAt: r.created_at,
});

export class GrantsRepo {
  private readonly byUser;
  constructor(private readonly db: Db) {
    this.byUser = db.prepare('SELECT * FROM grants WHERE user = ? ORDER BY created_at, id');
  }
  forUser(user: string): StoredGrant[] {
    return (this.byUser.all(user) as GrantRow[]).map(toGrant);
  }
  list(): StoredGrant[] {
    return (this.db.prepare('SELECT * FROM grants ORDER BY user, created_at, id').all() as GrantRow[]).map(toGrant);
  }
  get(id: string): StoredGrant | undefined {
    const r = this.db.prepare('SELECT * FROM grants WHERE id = ?').get(id) as GrantRow | undefined;
    return r && toGrant(r);
  }
  insert(g: StoredGrant): void {
    this.db
      .prepare(`INSERT INTO grants (id, user, keystore, pattern, capabilities, robot_selector, created_by, created_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(g.id, g.user, g.keystore, g.pattern, JSON.stringify(g.capabilities), g.robotSelector ? JSON.stringify(g.robotSelector) : null, g.createdBy, g.createdAt);
  }
  remove(id: string): boolean {
    return this.db.prepare('DELETE FROM grants WHERE id = ?').run(id).changes === 1;
  }
}
