import crypto from 'node:crypto';
import type { Access } from '../acl/access.js';
import { selectorMatches, type Labels } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { UserPrincipal } from '../auth/principal.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import type { KeystoresRepo } from '../keystores/keystores.repo.js';
import type { RobotsRepo } from '../robots/robots.repo.js';
import { BindingsRepo, type Binding } from './bindings.repo.js';

export interface BindingInput {
  keystore: string;
  enclave: string;
  robot?: string;
  selector?: Labels;
}

/** Canonical JSON of a selector (sorted keys), so equal selectors compare equal in SQL. */
const canonicalSelector = (s: Labels) => JSON.stringify(Object.fromEntries(Object.entries(s).sort(([a], [b]) => a.localeCompare(b))));

/**
 * Who gets which enclave. Creating a binding needs `bind` on the enclave, and for a member whose grant
 * has a robot selector, the robot (or the binding's own selector) must fall inside it.
 */
export class BindingsService {
  readonly repo: BindingsRepo;
  constructor(
    db: import('../db/database.js').Db,
    private readonly access: Access,
    private readonly keystores: KeystoresRepo,
    private readonly robots: RobotsRepo,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
  ) {
    this.repo = new BindingsRepo(db);
  }

  list(user: UserPrincipal): Binding[] {
    return this.repo
      .list()
      .filter((b) => this.access.can(user, 'read', b.keystore, b.enclave))
      .map((b) => {
        if (b.robot === undefined || user.role === 'admin') return b;
        const robot = this.robots.get(b.robot);
        // Robot names a member may not see are not shown to them.
        return robot && this.robotVisible(user, robot.labels) ? b : { ...b, robot: '(hidden)' };
      });
  }

  private robotVisible(user: UserPrincipal, labels: Labels): boolean {
    return this.access.robotVisible(user, labels);
  }

  create(user: UserPrincipal, input: BindingInput): Binding {
    if ((input.robot === undefined) === (input.selector === undefined)) {
      throw new InvalidInput('give exactly one of robot or selector');
    }
    if (input.selector && Object.keys(input.selector).length === 0) {
      throw new InvalidInput('selector: an empty selector would bind every robot; name at least one label');
    }
    this.access.requireKeystoreVisible(user, input.keystore);
    // Read first: an enclave the member cannot see answers 404 whatever else is wrong.
    this.access.require(user, { capability: 'read', keystore: input.keystore, enclave: input.enclave });
    const enclave = this.keystores.getEnclave(input.keystore, input.enclave);
    if (!enclave) throw new NotFound(`no enclave ${input.keystore}:${input.enclave}`);
    if (enclave.status !== 'active') throw new Conflict(`enclave ${input.keystore}:${input.enclave} is revoked`, 'enclave-revoked');
    let robotLabels: Labels[] | undefined;
    if (input.robot !== undefined) {
      const robot = this.robots.get(input.robot);
      // A robot outside every bind grant of a member does not exist for them (as in GET /v1/robots).
      if (!robot || !this.robotVisible(user, robot.labels)) throw new NotFound(`no robot "${input.robot}"`);
      robotLabels = [robot.labels];
    }
    const allowedBy = this.access.require(user, {
      capability: 'bind',
      keystore: input.keystore,
      enclave: input.enclave,
      robots: robotLabels,
      selector: input.selector,
    });
    const selector = input.selector ? canonicalSelector(input.selector) : null;
    const duplicate = this.repo.findDuplicate(input.keystore, input.enclave, input.robot ?? null, selector);
    if (duplicate) throw new Conflict(`this binding exists already (${duplicate})`, 'binding-exists');
    const id = `b_${crypto.randomBytes(9).toString('base64url')}`;
    this.repo.insert({
      id,
      keystore: input.keystore,
      enclave: input.enclave,
      robot: input.robot ?? null,
      selector,
      grant_id: allowedBy.startsWith('grant:') ? allowedBy.slice('grant:'.length) : null,
      created_by: user.name,
      created_at: this.now().toISOString(),
    });
    this.audit.record({
      actor: user.name,
      actorKind: 'user',
      action: 'binding.create',
      target: id,
      grantId: allowedBy,
      details: { keystore: input.keystore, enclave: input.enclave, robot: input.robot, selector: input.selector },
    });
    this.changes.publish({ kind: 'bindings', robot: input.robot, selector: input.selector });
    return this.repo.get(id)!;
  }

  delete(user: UserPrincipal, id: string): void {
    const b = this.repo.get(id);
    if (!b || !this.access.can(user, 'read', b.keystore, b.enclave)) throw new NotFound(`no binding "${id}"`);
    // The same rule as creating it: a member may only remove bindings their grant's robot selector covers.
    const robot = b.robot === undefined ? undefined : this.robots.get(b.robot);
    const allowedBy = this.access.require(user, {
      capability: 'bind',
      keystore: b.keystore,
      enclave: b.enclave,
      robots: robot ? [robot.labels] : undefined,
      selector: b.selector,
    });
    this.repo.remove(id);
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'binding.delete', target: id, grantId: allowedBy, details: { keystore: b.keystore, enclave: b.enclave, robot: b.robot, selector: b.selector } });
    this.changes.publish({ kind: 'bindings', robot: b.robot, selector: b.selector });
  }

  /** The enclaves a robot is bound to now, directly or through a selector matching its labels. */
  enclavesFor(robot: string, labels: Labels): { keystore: string; enclave: string }[] {
    const seen = new Set<string>();
    const out: { keystore: string; enclave: string }[] = [];
    for (const b of this.repo.candidatesFor(robot)) {
      if (b.selector && !selectorMatches(b.selector, labels)) continue;
      const key = `${b.keystore}\0${b.enclave}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ keystore: b.keystore, enclave: b.enclave });
    }
    return out;
  }
}
