import type { Capability, Grant, Labels } from '../acl/acl.js';
import type { Sql } from '../store/sql.js';

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

type Row = BindingRow & GrantColumns;

export class BindingsRepo {
  constructor(private readonly sql: Sql) {}

  async get(id: string): Promise<BoundVia | undefined> {
    const r = await this.sql.get<Row>(`${WITH_GRANT} WHERE b.id = ?`, [id]);
    return r && toBoundVia(r);
  }
  async list(): Promise<BoundVia[]> {
    return (await this.sql.all<Row>(`${WITH_GRANT} ORDER BY b.keystore, b.enclave, b.created_at, b.id`)).map(toBoundVia);
  }
  /** Direct bindings of a robot plus every selector binding (matched against labels by the caller). */
  async candidatesFor(robot: string): Promise<BoundVia[]> {
    const direct = await this.sql.all<Row>(`${WITH_GRANT} WHERE b.robot = ? ORDER BY b.created_at, b.id`, [robot]);
    const selectors = await this.sql.all<Row>(`${WITH_GRANT} WHERE b.selector IS NOT NULL ORDER BY b.created_at, b.id`);
    return [...direct, ...selectors].map(toBoundVia);
  }
  /** The bindings of a keystore's enclaves (of one enclave, given its path): those its deletion cascades away. */
  async ofEnclaves(keystore: string, enclave?: string): Promise<Binding[]> {
    const rows =
      enclave === undefined
        ? await this.sql.all<BindingRow>('SELECT * FROM bindings WHERE keystore = ?', [keystore])
        : await this.sql.all<BindingRow>('SELECT * FROM bindings WHERE keystore = ? AND enclave = ?', [keystore, enclave]);
    return rows.map(toBinding);
  }
  async findDuplicate(keystore: string, enclave: string, robot: string | null, selector: string | null): Promise<string | undefined> {
    // `IS ?` is SQLite's; both engines agree on this spelling of "equal, or both NULL".
    const r = await this.sql.get<{ id: string }>(
      `SELECT id FROM bindings WHERE keystore = ? AND enclave = ?
        AND (robot = ? OR (robot IS NULL AND CAST(? AS TEXT) IS NULL))
        AND (selector = ? OR (selector IS NULL AND CAST(? AS TEXT) IS NULL))`,
      [keystore, enclave, robot, robot, selector, selector],
    );
    return r?.id;
  }
  async insert(b: { id: string; keystore: string; enclave: string; robot: string | null; selector: string | null; grant_id: string | null; created_by: string; created_at: string }): Promise<void> {
    await this.sql.run(
      'INSERT INTO bindings (id, keystore, enclave, robot, selector, grant_id, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      [b.id, b.keystore, b.enclave, b.robot, b.selector, b.grant_id, b.created_by, b.created_at],
    );
  }
  async remove(id: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM bindings WHERE id = ?', [id])).changes === 1;
  }
}
