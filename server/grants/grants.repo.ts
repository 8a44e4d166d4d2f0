import type { Capability, Grant, Labels } from '../acl/acl.js';
import type { PermissionsEnvelope } from '../acl/envelope.js';
import type { Sql } from '../store/sql.js';

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

// "user" is quoted: unquoted it is a PostgreSQL keyword (the current role's name).
const COLUMNS = 'id, "user", keystore, pattern, capabilities, robot_selector, permissions_envelope, created_by, created_at';

/** Compared as code points: PostgreSQL's ORDER BY on text follows the database's locale, SQLite's does not. */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export class GrantsRepo {
  constructor(private readonly sql: Sql) {}

  async forUser(user: string): Promise<StoredGrant[]> {
    const rows = await this.sql.all<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE "user" = ?`, [user]);
    return rows.map(toGrant).sort((a, b) => byText(a.createdAt, b.createdAt) || byText(a.id, b.id));
  }

  async list(): Promise<StoredGrant[]> {
    const rows = await this.sql.all<GrantRow>(`SELECT ${COLUMNS} FROM grants`);
    return rows.map(toGrant).sort((a, b) => byText(a.user, b.user) || byText(a.createdAt, b.createdAt) || byText(a.id, b.id));
  }

  async get(id: string): Promise<StoredGrant | undefined> {
    const r = await this.sql.get<GrantRow>(`SELECT ${COLUMNS} FROM grants WHERE id = ?`, [id]);
    return r && toGrant(r);
  }

  async insert(g: StoredGrant): Promise<void> {
    await this.sql.run(`INSERT INTO grants (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      g.id,
      g.user,
      g.keystore,
      g.pattern,
      JSON.stringify(g.capabilities),
      json(g.robotSelector),
      json(g.permissionsEnvelope),
      g.createdBy,
      g.createdAt,
    ]);
  }

  /** Pattern, keystore and user stay: a grant for something else is a new grant. */
  async update(g: StoredGrant): Promise<void> {
    await this.sql.run('UPDATE grants SET capabilities = ?, robot_selector = ?, permissions_envelope = ? WHERE id = ?', [
      JSON.stringify(g.capabilities),
      json(g.robotSelector),
      json(g.permissionsEnvelope),
      g.id,
    ]);
  }

  async remove(id: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM grants WHERE id = ?', [id])).changes === 1;
  }

  async bindingCount(id: string): Promise<number> {
    const row = await this.sql.get<{ n: number | string }>('SELECT count(*) AS n FROM bindings WHERE grant_id = ?', [id]);
    return Number(row?.n ?? 0);
  }
}
