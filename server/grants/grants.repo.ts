import type { Db } from '../db/database.js';
import type { Capability, Grant, Labels } from '../acl/acl.js';
import type { PermissionsEnvelope } from '../acl/envelope.js';

interface GrantRow {
  id: string;
  user: string;
  keystore: string;
  pattern: string;
  capabilities: string;
  robot_selector: string | null;
  permissions_envelope: string | null;
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
  ...(r.permissions_envelope ? { permissionsEnvelope: JSON.parse(r.permissions_envelope) as PermissionsEnvelope } : {}),
  createdBy: r.created_by,
  createdAt: r.created_at,
});

const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));

export class GrantsRepo {
  private readonly stmts;
  constructor(private readonly db: Db) {
    this.stmts = {
      byUser: db.prepare('SELECT * FROM grants WHERE user = ? ORDER BY created_at, id'),
      list: db.prepare('SELECT * FROM grants ORDER BY user, created_at, id'),
      get: db.prepare('SELECT * FROM grants WHERE id = ?'),
      insert: db.prepare(`INSERT INTO grants (id, user, keystore, pattern, capabilities, robot_selector, permissions_envelope,
        created_by, created_at) VALUES (@id, @user, @keystore, @pattern, @capabilities, @robot_selector, @permissions_envelope,
        @created_by, @created_at)`),
      update: db.prepare(`UPDATE grants SET capabilities = @capabilities, robot_selector = @robot_selector,
        permissions_envelope = @permissions_envelope WHERE id = @id`),
      remove: db.prepare('DELETE FROM grants WHERE id = ?'),
      bindings: db.prepare('SELECT count(*) FROM bindings WHERE grant_id = ?').pluck(),
    };
  }
  forUser(user: string): StoredGrant[] {
    return (this.stmts.byUser.all(user) as GrantRow[]).map(toGrant);
  }
  list(): StoredGrant[] {
    return (this.stmts.list.all() as GrantRow[]).map(toGrant);
  }
  get(id: string): StoredGrant | undefined {
    const r = this.stmts.get.get(id) as GrantRow | undefined;
    return r && toGrant(r);
  }
  private row(g: StoredGrant) {
    return {
      id: g.id,
      user: g.user,
      keystore: g.keystore,
      pattern: g.pattern,
      capabilities: JSON.stringify(g.capabilities),
      robot_selector: json(g.robotSelector),
      permissions_envelope: json(g.permissionsEnvelope),
      created_by: g.createdBy,
      created_at: g.createdAt,
    };
  }
  insert(g: StoredGrant): void {
    this.stmts.insert.run(this.row(g));
  }
  /** Pattern, keystore and user stay: a grant for something else is a new grant. */
  update(g: StoredGrant): void {
    const { id, capabilities, robot_selector, permissions_envelope } = this.row(g);
    this.stmts.update.run({ id, capabilities, robot_selector, permissions_envelope });
  }
  remove(id: string): boolean {
    return this.stmts.remove.run(id).changes === 1;
  }
  bindingCount(id: string): number {
    return this.stmts.bindings.get(id) as number;
  }
}
