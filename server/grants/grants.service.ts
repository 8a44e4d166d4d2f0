import crypto from 'node:crypto';
import { isCapability, patternProblem, type Capability, type Labels } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { UserPrincipal } from '../auth/principal.js';
import type { Db } from '../db/database.js';
import { Forbidden, InvalidInput, NotFound } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import { GrantsRepo, type StoredGrant } from './grants.repo.js';

export interface GrantInput {
  user: string;
  keystore: string;
  pattern: string;
  capabilities: string[];
  robotSelector?: Labels;
}

/** Grants are written by admins only; unknown capabilities are refused here, when written. */
export class GrantsService {
  constructor(
    private readonly db: Db,
    readonly repo: GrantsRepo,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
  ) {}

  private requireAdmin(user: UserPrincipal): void {
    if (user.role !== 'admin') throw new Forbidden('only administrators manage grants');
  }

  list(user: UserPrincipal, filter: { user?: string; keystore?: string }): StoredGrant[] {
    this.requireAdmin(user);
    return this.repo.list().filter((g) => (!filter.user || g.user === filter.user) && (!filter.keystore || g.keystore === filter.keystore));
  }

  create(actor: UserPrincipal, input: GrantInput): StoredGrant {
    this.requireAdmin(actor);
    const unknown = input.capabilities.filter((c) => !isCapability(c));
    if (unknown.length) throw new InvalidInput(`capabilities: unknown ${unknown.map((c) => JSON.stringify(c)).join(', ')} (read, manage, bind)`);
    const problem = patternProblem(input.pattern);
    if (problem) throw new InvalidInput(`pattern: ${problem}`);
    const target = this.db.prepare('SELECT role FROM users WHERE name = ?').pluck().get(input.user) as string | undefined;
    if (!target) throw new NotFound(`no user "${input.user}"`);
    if (!this.db.prepare('SELECT 1 FROM keystores WHERE name = ?').get(input.keystore)) throw new NotFound(`no keystore "${input.keystore}"`);
    const grant: StoredGrant = {
      id: `g_${crypto.randomBytes(9).toString('base64url')}`,
      user: input.user,
      keystore: input.keystore,
      pattern: input.pattern,
      capabilities: [...new Set(input.capabilities as Capability[])],
      ...(input.robotSelector && Object.keys(input.robotSelector).length ? { robotSelector: input.robotSelector } : {}),
      createdBy: actor.name,
      createdAt: this.now().toISOString(),
    };
    this.repo.insert(grant);
    this.audit.record({
      actor: actor.name,
      actorKind: 'user',
      action: 'grant.create',
      target: grant.id,
      grantId: 'admin',
      details: { user: grant.user, keystore: grant.keystore, pattern: grant.pattern, capabilities: grant.capabilities, robotSelector: grant.robotSelector },
    });
    return grant;
  }

  /** Bindings made through the grant go with it (foreign key), so affected bundles change. */
  delete(actor: UserPrincipal, id: string): void {
    this.requireAdmin(actor);
    const g = this.repo.get(id);
    if (!g) throw new NotFound(`no grant "${id}"`);
    const bound = this.db.prepare('SELECT count(*) FROM bindings WHERE grant_id = ?').pluck().get(id) as number;
    this.repo.remove(id);
    this.audit.record({ actor: actor.name, actorKind: 'user', action: 'grant.delete', target: id, grantId: 'admin', details: { user: g.user, keystore: g.keystore, pattern: g.pattern, bindingsRemoved: bound } });
    if (bound) this.changes.publish({ kind: 'bindings' });
  }
}
