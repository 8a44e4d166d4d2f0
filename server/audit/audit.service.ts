import crypto from 'node:crypto';
import type { Repos, Store } from '../store/store.js';
import type { AuditQuery, AuditRow } from './audit.repo.js';

export type ActorKind = 'user' | 'robot' | 'anonymous' | 'system';
export type AuditResult = 'success' | 'failure' | 'denied';

export interface AuditEvent {
  actor: string;
  actorKind: ActorKind;
  action: string;
  target?: string;
  result?: AuditResult;
  /** The grant that allowed a member's action (or "admin"), so the log says why it was allowed. */
  grantId?: string;
  /** Public, non-secret facts only (names, revisions, counts). */
  details?: Record<string, unknown>;
}

export interface AuditEntry {
  id: number;
  at: string;
  actor: string;
  actorKind: ActorKind;
  action: string;
  target: string | null;
  result: AuditResult;
  grant: string | null;
  details: Record<string, unknown> | null;
  hash: string;
}

export type ChainVerdict =
  | { ok: true; entries: number; head: string }
  | { ok: false; entries: number; brokenAt: number; reason: string };

const GENESIS = '0'.repeat(64);

/** What the hash covers, in a fixed order: any edit of any column of any row changes it. */
function entryHash(prev: string, row: Omit<AuditRow, 'id' | 'hash' | 'prev_hash'>, id: number): string {
  const canonical = JSON.stringify([
    id,
    row.at,
    row.actor,
    row.actor_kind,
    row.action,
    row.target,
    row.result,
    row.grant_id,
    row.details,
  ]);
  return crypto.createHash('sha256').update(prev).update('\n').update(canonical).digest('hex');
}

// Values under these keys are never written, whatever a caller passes by mistake.
const SECRET_KEY = /^(password|newPassword|token|secret|privateKey|key|keyPem|assertion|content|files|policy)$/i;

function scrub(details: Record<string, unknown> | undefined): string | null {
  if (!details) return null;
  return JSON.stringify(details, (k, v) => (k && SECRET_KEY.test(k) ? undefined : v));
}

/** Append-only, hash-chained audit log. */
export class AuditService {
  constructor(
    private readonly store: Store,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /**
   * Appends inside the caller's unit of work, so the entry commits with the change it describes or not at all.
   * The read of the previous hash and the insert happen in that one write transaction, and write transactions
   * run one at a time on every engine (on PostgreSQL across replicas too), so concurrent writers cannot fork
   * the chain.
   */
  async record(r: Repos, event: AuditEvent): Promise<number> {
    const last = await r.audit.last();
    const prev = last?.hash ?? GENESIS;
    const id = (last?.id ?? 0) + 1;
    const row = {
      at: this.now().toISOString(),
      actor: event.actor,
      actor_kind: event.actorKind,
      action: event.action,
      target: event.target ?? null,
      result: event.result ?? 'success',
      grant_id: event.grantId ?? null,
      details: scrub(event.details),
    };
    const hash = entryHash(prev, row, id);
    return r.audit.insert({ id, ...row, prev_hash: prev, hash });
  }

  /**
   * An entry that describes no other write (a refusal, a failed login, a delivery): its own unit of work,
   * committed with those asked for at the same moment (a boot storm delivers thousands).
   */
  recordAlone(event: AuditEvent): Promise<number> {
    return this.store.grouped((r) => this.record(r, event));
  }

  async list(q: AuditQuery): Promise<AuditEntry[]> {
    return (await this.store.read((r) => r.audit.query(q))).map(toEntry);
  }

  /**
   * Recomputes the chain page by page, yielding to the event loop between pages: a log of millions of
   * entries must not stall long polls and logins while it is checked.
   */
  async verify(pageSize = 5000): Promise<ChainVerdict> {
    let prev = GENESIS;
    let count = 0;
    let expectedId = 1;
    let lastId = 0;
    for (;;) {
      const rows = await this.store.read((r) => r.audit.page(lastId, pageSize));
      if (rows.length === 0) break;
      for (const row of rows) {
        count++;
        if (row.id !== expectedId) {
          return { ok: false, entries: count, brokenAt: expectedId, reason: `entry ${expectedId} is missing` };
        }
        if (row.prev_hash !== prev) {
          return { ok: false, entries: count, brokenAt: row.id, reason: 'previous-hash link does not match' };
        }
        const { id, hash, prev_hash: _p, ...fields } = row;
        if (entryHash(prev, fields, id) !== hash) {
          return { ok: false, entries: count, brokenAt: row.id, reason: 'entry content does not match its hash' };
        }
        prev = hash;
        expectedId++;
        lastId = row.id;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { ok: true, entries: count, head: prev };
  }
}

function toEntry(row: AuditRow): AuditEntry {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    actorKind: row.actor_kind as ActorKind,
    action: row.action,
    target: row.target,
    result: row.result as AuditResult,
    grant: row.grant_id,
    details: row.details ? (JSON.parse(row.details) as Record<string, unknown>) : null,
    hash: row.hash,
  };
}
