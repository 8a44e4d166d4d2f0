import crypto from 'node:crypto';
import { decide, selectorMatches, selectorWithin, type Grant, type Labels } from '../acl/acl.js';
import type { Caller } from '../acl/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { Repos, Store } from '../store/store.js';
import type { Binding, BoundVia } from './bindings.repo.js';

export interface BindingInput {
  keystore: string;
  enclave: string;
  robot?: string;
  selector?: Labels;
}

/**
 * A binding made through a grant is valid only while the grant still covers it. `limited`: a selector binding
 * whose grant now requires labels the selector does not pin; only robots inside the grant receive it.
 */
export type BindingStatus = 'active' | 'limited' | 'suspended';

export interface BindingView extends Binding {
  status: BindingStatus;
  statusReason?: string;
}

/** Canonical JSON of a selector (sorted keys), so equal selectors compare equal in SQL. */
const canonicalSelector = (s: Labels) => JSON.stringify(Object.fromEntries(Object.entries(s).sort(([a], [b]) => a.localeCompare(b))));

/**
 * Inside the unit of work that deletes a keystore or an enclave, before the delete: its bindings go with it
 * (ON DELETE CASCADE), a change to bindings like any other, told as one. The bundle cache keeps each robot's
 * bound set across keystore and enclave changes and relies on this: an enclave made again under a deleted
 * one's path must not reach the robots whose binding went with the old one.
 */
export async function publishCascadedBindings(r: Repos, keystore: string, enclave?: string): Promise<void> {
  const told = new Set<string>();
  for (const b of await r.bindings.ofEnclaves(keystore, enclave)) {
    const scope = b.robot ?? `selector:${canonicalSelector(b.selector ?? {})}`;
    if (told.has(scope)) continue;
    told.add(scope);
    await r.publish({ kind: 'bindings', robot: b.robot, selector: b.selector });
  }
}

/** Whether the grant a binding was made through still lets its holder bind this enclave to these robots. */
function grantCovers(grant: Grant, b: Binding, robots: readonly Labels[] | undefined): boolean {
  return decide({ name: grant.user, role: 'member' }, [grant], {
    capability: 'bind',
    keystore: b.keystore,
    enclave: b.enclave,
    robots,
  }).allowed;
}

/**
 * Who gets which enclave. Creating a binding needs `bind` on the enclave, and for a member whose grant
 * has a robot selector, the robot (or the binding's own selector) must fall inside it. That stays true after
 * the binding is made: relabelling a robot, editing or deleting the grant takes effect at the next bundle.
 */
export class BindingsService {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditService,
    private readonly now: () => Date,
  ) {}

  private status({ binding: b, grant }: BoundVia, robotLabels: Labels | undefined): Pick<BindingView, 'status' | 'statusReason'> {
    if (b.grant === null) return { status: 'active' };
    if (!grant || !grantCovers(grant, b, [])) return { status: 'suspended', statusReason: 'the grant it was made through no longer allows binding this enclave' };
    if (b.robot !== undefined) {
      return robotLabels && grantCovers(grant, b, [robotLabels])
        ? { status: 'active' }
        : { status: 'suspended', statusReason: "the robot is outside the grant's robot selector" };
    }
    return selectorWithin(b.selector!, grant.robotSelector ?? {})
      ? { status: 'active' }
      : { status: 'limited', statusReason: "only robots inside the grant's robot selector receive it" };
  }

  async list(caller: Caller): Promise<BindingView[]> {
    const { robots, bindings } = await this.store.read(async (r) => ({ robots: await r.robots.list(), bindings: await r.bindings.list() }));
    const labels = new Map(robots.map((r) => [r.name, r.labels]));
    const out: BindingView[] = [];
    for (const via of bindings) {
      const b = via.binding;
      if (!caller.can('read', b.keystore, b.enclave)) continue;
      const robotLabels = b.robot === undefined ? undefined : labels.get(b.robot);
      const view: BindingView = { ...b, ...this.status(via, robotLabels) };
      // Robot names a member may not see are not shown, except on bindings they made through their own grant
      // (they named that robot themselves).
      const own = via.grant !== undefined && caller.grant(via.grant.id) !== undefined;
      if (b.robot !== undefined && !own && !(robotLabels && caller.robotVisible(robotLabels))) view.robot = '(hidden)';
      out.push(view);
    }
    return out;
  }

  async create(caller: Caller, input: BindingInput): Promise<Binding> {
    if ((input.robot === undefined) === (input.selector === undefined)) {
      throw new InvalidInput('give exactly one of robot or selector');
    }
    if (input.selector && Object.keys(input.selector).length === 0) {
      throw new InvalidInput('selector: an empty selector would bind every robot; name at least one label');
    }
    caller.requireKeystoreVisible(input.keystore);
    // Read first: an enclave the member cannot see answers 404 whatever else is wrong.
    caller.require({ capability: 'read', keystore: input.keystore, enclave: input.enclave });
    const selector = input.selector ? canonicalSelector(input.selector) : null;
    const id = `b_${crypto.randomBytes(9).toString('base64url')}`;
    // Every check in the unit of work (a few indexed reads): the enclave, the robot's labels and the duplicate
    // test hold at commit, and two identical requests at once make one binding, not two.
    return this.store.tx(async (r) => {
      const enclave = await r.keystores.getEnclave(input.keystore, input.enclave);
      if (!enclave) throw new NotFound(`no enclave ${input.keystore}:${input.enclave}`);
      if (enclave.status !== 'active') {
        throw new Conflict(`enclave ${input.keystore}:${input.enclave} is revoked (rotate it to issue a fresh one first)`, 'enclave-revoked');
      }
      let robotLabels: Labels[] | undefined;
      if (input.robot !== undefined) {
        const robot = await r.robots.get(input.robot);
        // A robot outside every bind grant of a member does not exist for them (as in GET /v1/robots).
        if (!robot) throw new NotFound(`no robot "${input.robot}"`);
        if (!caller.robotVisible(robot.labels)) throw caller.robotNotVisible(input.robot);
        robotLabels = [robot.labels];
      }
      const allowedBy = caller.require({
        capability: 'bind',
        keystore: input.keystore,
        enclave: input.enclave,
        robots: robotLabels,
        selector: input.selector,
      });
      const duplicate = await r.bindings.findDuplicate(input.keystore, input.enclave, input.robot ?? null, selector);
      if (duplicate) throw new Conflict(`this binding exists already (${duplicate})`, 'binding-exists');
      await r.bindings.insert({
        id,
        keystore: input.keystore,
        enclave: input.enclave,
        robot: input.robot ?? null,
        selector,
        grant_id: allowedBy.startsWith('grant:') ? allowedBy.slice('grant:'.length) : null,
        created_by: caller.name,
        created_at: this.now().toISOString(),
      });
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'binding.create',
        target: id,
        grantId: allowedBy,
        details: { keystore: input.keystore, enclave: input.enclave, robot: input.robot, selector: input.selector },
      });
      await r.publish({ kind: 'bindings', robot: input.robot, selector: input.selector });
      return (await r.bindings.get(id))!.binding;
    });
  }

  async delete(caller: Caller, id: string): Promise<void> {
    await this.store.tx(async (r) => {
      const via = await r.bindings.get(id);
      if (!via || !caller.can('read', via.binding.keystore, via.binding.enclave)) throw new NotFound(`no binding "${id}"`);
      const b = via.binding;
      // A binding made through one of the caller's own grants is theirs to remove, even once suspended. Any
      // other follows the rule for creating it: a member may only remove what their robot selector covers.
      const own = via.grant !== undefined && caller.grant(via.grant.id) !== undefined;
      const robot = b.robot === undefined ? undefined : await r.robots.get(b.robot);
      const allowedBy = own
        ? `grant:${via.grant!.id}`
        : caller.require({
            capability: 'bind',
            keystore: b.keystore,
            enclave: b.enclave,
            robots: robot ? [robot.labels] : undefined,
            selector: b.selector,
          });
      if (!(await r.bindings.remove(id))) throw new NotFound(`no binding "${id}"`);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'binding.delete',
        target: id,
        grantId: allowedBy,
        details: { keystore: b.keystore, enclave: b.enclave, robot: b.robot, selector: b.selector },
      });
      await r.publish({ kind: 'bindings', robot: b.robot, selector: b.selector });
    });
  }

  /**
   * The enclaves a robot receives now: bound directly or through a selector matching its labels, and, for a
   * binding made through a grant, only while that grant still covers this robot. Runs on the caller's unit of
   * work or read (`r`), so a decision taken inside a transaction sees that transaction's rows.
   */
  async enclavesFor(r: Pick<Repos, 'bindings'>, robot: string, labels: Labels): Promise<{ keystore: string; enclave: string }[]> {
    const seen = new Set<string>();
    const out: { keystore: string; enclave: string }[] = [];
    for (const { binding: b, grant } of await r.bindings.candidatesFor(robot)) {
      if (b.selector && !selectorMatches(b.selector, labels)) continue;
      if (b.grant !== null && (!grant || !grantCovers(grant, b, [labels]))) continue;
      const key = `${b.keystore}\0${b.enclave}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ keystore: b.keystore, enclave: b.enclave });
    }
    return out;
  }
}
