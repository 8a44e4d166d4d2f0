import type { UserPrincipal } from '../auth/principal.js';
import { Forbidden, NotFound } from '../errors.js';
import type { GrantsRepo } from '../grants/grants.repo.js';
import { allowedBy, decide, patternMatches, selectorMatches, type Action, type Capability, type Labels } from './acl.js';

/**
 * Applies the pure decision to a calling user, loading their grants. The status rules live here so every
 * endpoint answers the same denial the same way: an enclave the member may not `read` does not exist for
 * them (404, names do not leak); one they can read but not act on is a 403.
 */
export class Access {
  constructor(private readonly grants: GrantsRepo) {}

  /** Returns what allowed the action (for the audit log) or throws NotFound / Forbidden. */
  require(user: UserPrincipal, action: Action): string {
    const grants = user.role === 'admin' ? [] : this.grants.forUser(user.name);
    const d = decide(user, grants, action);
    if (d.allowed) return allowedBy(d)!;
    if (action.capability !== 'read' && decide(user, grants, { ...action, capability: 'read' }).allowed) {
      throw new Forbidden(
        d.reason === 'outside-robot-selector'
          ? `your grant does not allow binding ${action.keystore}:${action.enclave} to these robots`
          : `you may not ${action.capability} ${action.keystore}:${action.enclave}`,
      );
    }
    throw new NotFound(`no enclave ${action.keystore}:${action.enclave}`);
  }

  can(user: UserPrincipal, capability: Capability, keystore: string, enclave: string): boolean {
    if (user.role === 'admin') return true;
    return decide(user, this.grants.forUser(user.name), { capability, keystore, enclave }).allowed;
  }

  /** A filter for listings: built once per request, applied to many paths. */
  readable(user: UserPrincipal, keystore: string): (enclave: string) => boolean {
    if (user.role === 'admin') return () => true;
    const patterns = this.grants
      .forUser(user.name)
      .filter((g) => g.keystore === keystore && g.capabilities.includes('read'))
      .map((g) => g.pattern);
    return (enclave) => patterns.some((p) => patternMatches(p, enclave));
  }

  /** Keystores a user can see at all: admins all, members those they hold a grant in. */
  visibleKeystores(user: UserPrincipal): Set<string> | 'all' {
    if (user.role === 'admin') return 'all';
    return new Set(this.grants.forUser(user.name).map((g) => g.keystore));
  }

  /** A member sees the robots their `bind` grants may reach (to bind them); admins see every robot. */
  robotVisible(user: UserPrincipal, labels: Labels): boolean {
    if (user.role === 'admin') return true;
    return this.grants
      .forUser(user.name)
      .some((g) => g.capabilities.includes('bind') && selectorMatches(g.robotSelector ?? {}, labels));
  }

  requireKeystoreVisible(user: UserPrincipal, keystore: string): void {
    const visible = this.visibleKeystores(user);
    if (visible !== 'all' && !visible.has(keystore)) throw new NotFound(`no keystore "${keystore}"`);
  }
}
