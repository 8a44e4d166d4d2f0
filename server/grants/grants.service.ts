import crypto from 'node:crypto';
import { isCapability, patternProblem, type Capability, type Labels } from '../acl/acl.js';
import type { Caller } from '../acl/caller.js';
import { envelopePatternProblem, type PermissionsEnvelope } from '../acl/envelope.js';
import type { AuditService } from '../audit/audit.service.js';
import { InvalidInput, NotFound } from '../errors.js';
import type { Store } from '../store/store.js';
import type { StoredGrant } from './grants.repo.js';

export interface GrantInput {
  user: string;
  keystore: string;
  pattern: string;
  capabilities: string[];
  robotSelector?: Labels;
  permissionsEnvelope?: PermissionsEnvelope;
}

export type GrantPatch = Partial<Pick<GrantInput, 'capabilities' | 'robotSelector'>> & {
  /** null removes the envelope (unbounded again). */
  permissionsEnvelope?: PermissionsEnvelope | null;
};

function capabilitiesOf(list: string[]): Capability[] {
  const unknown = list.filter((c) => !isCapability(c));
  if (unknown.length) throw new InvalidInput(`capabilities: unknown ${unknown.map((c) => JSON.stringify(c)).join(', ')} (read, manage, bind)`);
  return [...new Set(list as Capability[])];
}

function envelopeOf(e: PermissionsEnvelope): PermissionsEnvelope {
  const problems = [...e.publish, ...e.subscribe].map(envelopePatternProblem).filter((p): p is string => p !== null);
  if (problems.length) throw new InvalidInput(`permissionsEnvelope: ${problems[0]}`, problems);
  return { publish: [...new Set(e.publish)], subscribe: [...new Set(e.subscribe)] };
}

/**
 * Grants are written by admins only; unknown capabilities and malformed patterns are refused here, when
 * written. Changing or deleting a grant changes what its bindings deliver at once: a binding made through a
 * grant is valid only while the grant still covers it (checked where bundles are computed).
 */
export class GrantsService {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditService,
    private readonly now: () => Date,
  ) {}

  async list(filter: { user?: string; keystore?: string }): Promise<StoredGrant[]> {
    const all = await this.store.read((r) => r.grants.list());
    return all.filter((g) => (!filter.user || g.user === filter.user) && (!filter.keystore || g.keystore === filter.keystore));
  }

  /** A member's grants, in the order their ACL is compiled from. */
  forUser(user: string): Promise<StoredGrant[]> {
    return this.store.read((r) => r.grants.forUser(user));
  }

  async create(actor: Caller, input: GrantInput): Promise<StoredGrant> {
    const grantedBy = actor.requireAdmin('grant:manage');
    const capabilities = capabilitiesOf(input.capabilities);
    const problem = patternProblem(input.pattern);
    if (problem) throw new InvalidInput(`pattern: ${problem}`);
    const envelope = input.permissionsEnvelope && envelopeOf(input.permissionsEnvelope);
    const grant: StoredGrant = {
      id: `g_${crypto.randomBytes(9).toString('base64url')}`,
      user: input.user,
      keystore: input.keystore,
      pattern: input.pattern,
      capabilities,
      ...(input.robotSelector && Object.keys(input.robotSelector).length ? { robotSelector: input.robotSelector } : {}),
      ...(envelope ? { permissionsEnvelope: envelope } : {}),
      createdBy: actor.name,
      createdAt: this.now().toISOString(),
    };
    await this.store.tx(async (r) => {
      if (!(await r.users.get(input.user))) throw new NotFound(`no user "${input.user}"`);
      if (!(await r.keystores.get(input.keystore))) throw new NotFound(`no keystore "${input.keystore}"`);
      await r.grants.insert(grant);
      await this.audit.record(r, {
        actor: actor.name,
        actorKind: 'user',
        action: 'grant.create',
        target: grant.id,
        grantId: grantedBy,
        details: {
          user: grant.user,
          keystore: grant.keystore,
          pattern: grant.pattern,
          capabilities: grant.capabilities,
          robotSelector: grant.robotSelector,
          permissionsEnvelope: grant.permissionsEnvelope,
        },
      });
    });
    return grant;
  }

  async update(actor: Caller, id: string, patch: GrantPatch): Promise<StoredGrant> {
    const grantedBy = actor.requireAdmin('grant:manage');
    const capabilities = patch.capabilities && capabilitiesOf(patch.capabilities);
    const envelope = patch.permissionsEnvelope && envelopeOf(patch.permissionsEnvelope);
    return this.store.tx(async (r) => {
      const g = await r.grants.get(id);
      if (!g) throw new NotFound(`no grant "${id}"`);
      const next: StoredGrant = { ...g };
      if (capabilities) next.capabilities = capabilities;
      if (patch.robotSelector !== undefined) {
        if (Object.keys(patch.robotSelector).length) next.robotSelector = patch.robotSelector;
        else delete next.robotSelector;
      }
      if (patch.permissionsEnvelope === null) delete next.permissionsEnvelope;
      else if (envelope) next.permissionsEnvelope = envelope;
      await r.grants.update(next);
      await this.audit.record(r, {
        actor: actor.name,
        actorKind: 'user',
        action: 'grant.update',
        target: id,
        grantId: grantedBy,
        details: {
          capabilities: next.capabilities,
          robotSelector: next.robotSelector,
          permissionsEnvelope: next.permissionsEnvelope,
          bindings: await r.grants.bindingCount(id),
        },
      });
      await r.publish({ kind: 'bindings' });
      return next;
    });
  }

  /** Bindings made through the grant go with it (foreign key), so affected bundles change. */
  async delete(actor: Caller, id: string): Promise<void> {
    const grantedBy = actor.requireAdmin('grant:manage');
    await this.store.tx(async (r) => {
      const g = await r.grants.get(id);
      if (!g) throw new NotFound(`no grant "${id}"`);
      const count = await r.grants.bindingCount(id);
      await r.grants.remove(id);
      await this.audit.record(r, {
        actor: actor.name,
        actorKind: 'user',
        action: 'grant.delete',
        target: id,
        grantId: grantedBy,
        details: { user: g.user, keystore: g.keystore, pattern: g.pattern, bindingsRemoved: count },
      });
      if (count) await r.publish({ kind: 'bindings' });
    });
  }
}
