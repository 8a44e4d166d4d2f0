import type { Db } from '../db/database.js';
import type { Labels } from '../acl/acl.js';

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

export class BindingsRepo {
  private readonly stmts;
  constructor(db: Db) {
    this.stmts = {
      get: db.prepare('SELECT * FROM bindings WHERE id = ?'),
      list: db.prepare('SELECT * FROM bindings ORDER BY keystore, enclave, created_at'),
      forRobot: db.prepare('SELECT * FROM bindings WHERE robot = ?'),
      selectors: db.prepare('SELECT * FROM bindings WHERE selector IS NOT NULL'),
      duplicate: db.prepare(`SELECT id FROM bindings WHERE keystore = ? AND enclave = ?
        AND robot IS ? AND selector IS ?`),
      insert: db.prepare(`INSERT INTO bindings (id, keystore, enclave, robot, selector, grant_id, created_by, created_at)
        VALUES (@id, @keystore, @enclave, @robot, @selector, @grant_id, @created_by, @created_at)`),
      remove: db.prepare('DELETE FROM bindings WHERE id = ?'),
    };
  }
  get(id: string): Binding | undefined {
    const r = this.stmts.get.get(id) as BindingRow | undefined;
    return r && toBinding(r);
  }
  list(): Binding[] {
    return (this.stmts.list.all() as BindingRow[]).map(toBinding);
  }
  /** Direct bindings of a robot plus every selector binding (matched against labels by the caller). */
  candidatesFor(robot: string): Binding[] {
    return [...(this.stmts.forRobot.all(robot) as BindingRow[]), ...(this.stmts.selectors.all() as BindingRow[])].map(toBinding);
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
