import type { Db } from '../db/database.js';

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

export class AuditRepo {
  private readonly insertStmt;
  private readonly lastStmt;
  constructor(private readonly db: Db) {
    this.insertStmt = db.prepare(`INSERT INTO audit_log
      (at, actor, actor_kind, action, target, result, grant_id, details, prev_hash, hash)
      VALUES (@at, @actor, @actor_kind, @action, @target, @result, @grant_id, @details, @prev_hash, @hash)`);
    this.lastStmt = db.prepare('SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1');
  }

  last(): { id: number; hash: string } | undefined {
    return this.lastStmt.get() as { id: number; hash: string } | undefined;
  }

  insert(row: Omit<AuditRow, 'id'>): number {
    return Number(this.insertStmt.run(row).lastInsertRowid);
  }

  query(q: AuditQuery): AuditRow[] {
    const where: string[] = [];
    const params: Record<string, unknown> = { limit: q.limit };
    if (q.since) {
      where.push('at >= @since');
      params.since = q.since;
    }
    if (q.until) {
      where.push('at <= @until');
      params.until = q.until;
    }
    if (q.actor) {
      where.push('actor = @actor');
      params.actor = q.actor;
    }
    if (q.target) {
      // A substring, whatever the case; LIKE wildcards in the input are escaped.
      where.push("lower(target) LIKE @target ESCAPE '\\'");
      params.target = `%${likeEscaped(q.target.toLowerCase())}%`;
    }
    if (q.action) {
      // A trailing '*' filters by prefix ("enclave.*"); LIKE wildcards in the input are escaped.
      if (q.action.endsWith('*')) {
        where.push("action LIKE @action ESCAPE '\\'");
        params.action = `${likeEscaped(q.action.slice(0, -1))}%`;
      } else {
        where.push('action = @action');
        params.action = q.action;
      }
    }
    if (q.result) {
      where.push('result = @result');
      params.result = q.result;
    }
    const sql = `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY id DESC LIMIT @limit`;
    return this.db.prepare(sql).all(params) as AuditRow[];
  }

  /** The chain in order, one page after `afterId` at a time (so a caller can yield between pages). */
  page(afterId: number, size: number): AuditRow[] {
    return this.db.prepare('SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?').all(afterId, size) as AuditRow[];
  }
}
