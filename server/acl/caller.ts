import type { UserPrincipal } from '../auth/principal.js';
import { Denied } from '../errors.js';
import {
  allowedBy,
  decide,
  isEnclaveAction,
  patternMatches,
  selectorMatches,
  type Action,
  type AdminCapability,
  type Capability,
  type DenialReason,
  type EnclaveAction,
  type Grant,
  type Labels,
} from './acl.js';

const ADMIN_TEXT: Record<AdminCapability, string> = {
  'user:manage': 'manage users',
  'grant:manage': 'manage grants',
  'keystore:create': 'create keystores',
  'keystore:import': 'import keystores',
  'keystore:export': 'export keystores',
  'keystore:governance': 'change governance',
  'keystore:delete': 'delete keystores',
  'robot:manage': 'manage robots',
  'audit:read': 'read the audit log',
};

/**
 * One calling user and their grants, loaded once per request and applied to many questions. The status rules
 * live here so every endpoint answers the same denial the same way: an enclave (or keystore) the member may
 * not `read` does not exist for them (404, names do not leak); one they can read but not act on is a 403.
 * Every denial is a `Denied` error, which the app audits in one place.
 */
export class Caller {
  readonly name: string;
  readonly role: UserPrincipal['role'];
  private readonly byId: Map<string, Grant>;

  constructor(
    readonly principal: UserPrincipal,
    readonly grants: readonly Grant[],
  ) {
    this.name = principal.name;
    this.role = principal.role;
    this.byId = new Map(grants.map((g) => [g.id, g]));
  }

  get isAdmin(): boolean {
    return this.role === 'admin';
  }

  decide(action: Action) {
    return decide(this.principal, this.grants, action);
  }

  /** Returns what allowed the action (for the audit log: "admin" or "grant:ID") or throws `Denied`. */
  require(action: Action): string {
    const d = this.decide(action);
    if (d.allowed) return allowedBy(d)!;
    if (!isEnclaveAction(action)) {
      throw new Denied(403, `only administrators may ${ADMIN_TEXT[action.capability]}`, { capability: action.capability, reason: d.reason });
    }
    throw this.denial(action, d.reason);
  }

  /** Shorthand for server-wide actions, which only the admin role holds. */
  requireAdmin(capability: AdminCapability): string {
    return this.require({ capability });
  }

  private denial(action: EnclaveAction, reason: DenialReason): Denied {
    const target = `${action.keystore}:${action.enclave}`;
    const refusal = { capability: action.capability, target, reason };
    if (action.capability !== 'read' && this.can('read', action.keystore, action.enclave)) {
      const message =
        reason === 'outside-robot-selector'
          ? `your grant does not allow binding ${target} to these robots`
          : reason === 'outside-permissions-envelope'
            ? `the permissions for ${target} go beyond what your grant allows you to sign`
            : `you may not ${action.capability} ${target}`;
      return new Denied(403, message, refusal, reason === 'outside-permissions-envelope' ? 'outside-permissions-envelope' : 'forbidden');
    }
    return new Denied(404, `no enclave ${target}`, refusal);
  }

  can(capability: Capability, keystore: string, enclave: string): boolean {
    return this.decide({ capability, keystore, enclave }).allowed;
  }

  /** The grant with this id, when it is one of the caller's. */
  grant(id: string): Grant | undefined {
    return this.byId.get(id);
  }

  /** A filter for listings: applied to many paths of one keystore. */
  readable(keystore: string): (enclave: string) => boolean {
    if (this.isAdmin) return () => true;
    const patterns = this.grants.filter((g) => g.keystore === keystore && g.capabilities.includes('read')).map((g) => g.pattern);
    return (enclave) => patterns.some((p) => patternMatches(p, enclave));
  }

  /** Keystores the caller can see at all: admins all, members those they hold a grant in. */
  visibleKeystores(): Set<string> | 'all' {
    if (this.isAdmin) return 'all';
    return new Set(this.grants.map((g) => g.keystore));
  }

  requireKeystoreVisible(keystore: string): void {
    const visible = this.visibleKeystores();
    if (visible !== 'all' && !visible.has(keystore)) {
      throw new Denied(404, `no keystore "${keystore}"`, { capability: 'read', target: keystore, reason: 'no-grant' });
    }
  }

  /** A member sees the robots their `bind` grants may reach (to bind them); admins see every robot. */
  robotVisible(labels: Labels): boolean {
    if (this.isAdmin) return true;
    return this.grants.some((g) => g.capabilities.includes('bind') && selectorMatches(g.robotSelector ?? {}, labels));
  }

  /** 404 for a robot the caller may not see, audited as a refusal. */
  robotNotVisible(name: string): Denied {
    return new Denied(404, `no robot "${name}"`, { capability: 'bind', target: `robot:${name}`, reason: 'outside-robot-selector' });
  }
}
