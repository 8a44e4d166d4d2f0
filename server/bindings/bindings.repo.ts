import type { Db } from '../db/database.js';
import type { Capability, Grant, Labels } from '../acl/acl.js';

/** The grant a member bound through, as it is now (NULL columns: an admin bound it, or the grant is gone). */
interface GrantColumns {
  g_user: string | null;
  g_pattern: string | null;
  g_capabilities: string | null;
  g_robot_selector: string | null;
}

interface BindingRow {
  id: string;
  keystore: string;
  enclave: string;
  robot: string | null;
  selector: string | null;
  grant_id: string | null;
  created_by: string;
  created_at: string;
}

export interface BoundVia {
  binding: Binding;
  /** The grant it was made through, as it is now; undefined for an administrator's binding. */
  grant?: Grant;
}

export interface Binding {
  id: string;
  keystore: string;
  enclave: string;
  robot?: string;
  selector?: Labels;
  grant: string | null;
  createdBy: string;
  createdAt: string;
}

const toBinding = (r: BindingRow): Binding => ({
  id: r.id,
  keystore: r.keystore,
  enclave: r.enclave,
  ...(r.robot !== null ? { robot: r.robot } : {}),
  ...(r.selector !== null ? { selector: JSON.parse(r.selector) as Labels } : {}),
  grant: r.grant_id,
  createdBy: r.created_by,
  createdAt: r.created_at,
});

const toBoundVia = (r: BindingRow & GrantColumns): BoundVia => ({
  binding: toBinding(r),
  ...(r.grant_id !== null && r.g_user !== null
    ? {
        grant: {
          id: r.grant_id,
          user: r.g_user,
          keystore: r.keystore,
          pattern: r.g_pattern!,
          capabilities: JSON.parse(r.g_capabilities!) as Capability[],
          ...(r.g_robot_selector ? { robotSelector: JSON.parse(r.g_robot_selector) as Labels } : {}),
        },
      }
    : {}),
});

const WITH_GRANT = `SELECT b.*, g.user AS g_user, g.pattern AS g_pattern, g.capabilities AS g_capabilities,
  g.robot_selector AS g_robot_selector FROM bindings b LEFT JOIN grants g ON g.id = b.grant_id`;

export class BindingsRepo {
  private readonly stmts;
  constructor(db: Db) {
    this.stmts = {
      get: db.prepare(`${WITH_GRANT} WHERE b.id = ?`),
      list: db.prepare(`${WITH_GRANT} ORDER BY b.keystore, b.enclave, b.created_at`),
      forRobot: db.prepare(`${WITH_GRANT} WHERE b.robot = ?`),
      selectors: db.prepare(`${WITH_GRANT} WHERE b.selector IS NOT NULL`),
      duplicate: db.prepare(`SELECT id FROM bindings WHERE keystore = ? AND enclave = ?
        AND robot IS ? AND selector IS ?`),
      insert: db.prepare(`INSERT INTO bindings (id, keystore, enclave, robot, selector, grant_id, created_by, created_at)
        VALUES (@id, @keystore, @enclave, @robot, @selector, @grant_id, @created_by, @created_at)`),
      remove: db.prepare('DELETE FROM bindings WHERE id = ?'),
    };
  }
  get(id: string): BoundVia | undefined {
    const r = this.stmts.get.get(id) as (BindingRow & GrantColumns) | undefined;
    return r && toBoundVia(r);
  }
  list(): BoundVia[] {
    return (this.stmts.list.all() as (BindingRow & GrantColumns)[]).map(toBoundVia);
  }
  /** Direct bindings of a robot plus every selector binding (matched against labels by the caller). */
  candidatesFor(robot: string): BoundVia[] {
    return [...(this.stmts.forRobot.all(robot) as (BindingRow & GrantColumns)[]), ...(this.stmts.selectors.all() as (BindingRow & GrantColumns)[])].map(toBoundVia);
  }
  findDuplicate(keystore: string, enclave: string, robot: string | null, selector: string | null): string | undefined {
    return (this.stmts.duplicate.get(keystore, enclave, robot, selector) as { id: string } | undefined)?.id;
  }
  insert(b: { id: string; keystore: string; enclave: string; robot: string | null; selector: string | null; grant_id: string | null; created_by: string; created_at: string }): void {
    this.stmts.insert.run(b);
  }
  remove(id: string): boolean {
    return this.stmts.remove.run(id).changes === 1;
  }
}
