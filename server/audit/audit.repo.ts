import type { Param, Sql } from '../store/sql.js';

export interface AuditRow {
  id: number;
  at: string;
  actor: string;
  actor_kind: string;
  action: string;
  target: string | null;
  result: string;
  grant_id: string | null;
  details: string | null;
  prev_hash: string;
  hash: string;
}

export interface AuditQuery {
  since?: string;
  until?: string;
  actor?: string;
  target?: string;
  action?: string;
  result?: string;
  limit: number;
}

/** Text matched literally inside a LIKE pattern written with ESCAPE '\\'. */
const likeEscaped = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

// The id is a BIGINT on PostgreSQL, which pg hands back as a string.
const toRow = (row: AuditRow): AuditRow => ({ ...row, id: Number(row.id) });

const COLUMNS = 'id, at, actor, actor_kind, action, target, result, grant_id, details, prev_hash, hash';

export class AuditRepo {
  /**
   * The chain's head as this unit of work last wrote it. A repository lives for one unit of work, whose write
   * transaction no one else can append to: a boot storm's grouped commit appends hundreds of rows, and only the
   * first needs to ask the database where the chain ends.
   */
  private head: { id: number; hash: string } | undefined;

  constructor(private readonly sql: Sql) {}

  async last(): Promise<{ id: number; hash: string } | undefined> {
    if (this.head) return this.head;
    const row = await this.sql.get<{ id: number | string; hash: string }>('SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1');
    return row && { id: Number(row.id), hash: row.hash };
  }

  /** The id is the caller's (it is part of what the hash covers). */
  async insert(row: AuditRow): Promise<number> {
    await this.sql.run(`INSERT INTO audit_log (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, [
      row.id,
      row.at,
      row.actor,
      row.actor_kind,
      row.action,
      row.target,
      row.result,
      row.grant_id,
      row.details,
      row.prev_hash,
      row.hash,
    ]);
    this.head = { id: row.id, hash: row.hash };
    return row.id;
  }

  async query(q: AuditQuery): Promise<AuditRow[]> {
    const where: string[] = [];
    const params: Param[] = [];
    if (q.since) {
      where.push('at >= ?');
      params.push(q.since);
    }
    if (q.until) {
      where.push('at <= ?');
      params.push(q.until);
    }
    if (q.actor) {
      where.push('actor = ?');
      params.push(q.actor);
    }
    if (q.target) {
      // A substring, whatever the case; LIKE wildcards in the input are escaped.
      where.push("lower(target) LIKE ? ESCAPE '\\'");
      params.push(`%${likeEscaped(q.target.toLowerCase())}%`);
    }
    if (q.action) {
      // A trailing '*' filters by prefix ("enclave.*"); LIKE wildcards in the input are escaped.
      if (q.action.endsWith('*')) {
        where.push("action LIKE ? ESCAPE '\\'");
        params.push(`${likeEscaped(q.action.slice(0, -1))}%`);
      } else {
        where.push('action = ?');
        params.push(q.action);
      }
    }
    if (q.result) {
      where.push('result = ?');
      params.push(q.result);
    }
    params.push(q.limit);
    const text = `SELECT ${COLUMNS} FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id DESC LIMIT ?`;
    return (await this.sql.all<AuditRow>(text, params)).map(toRow);
  }

  /** The chain in order, one page after `afterId` at a time (so a caller can yield between pages). */
  async page(afterId: number, size: number): Promise<AuditRow[]> {
    return (await this.sql.all<AuditRow>(`SELECT ${COLUMNS} FROM audit_log WHERE id > ? ORDER BY id LIMIT ?`, [afterId, size])).map(toRow);
  }
}
