import type { AuditService } from '../audit/audit.service.js';
import { hashPassword } from '../auth/passwords.js';
import type { Role, UserPrincipal } from '../auth/principal.js';
import { Conflict, NotFound } from '../errors.js';
import type { Store } from '../store/store.js';
import type { User } from './users.repo.js';

export interface PublicUser {
  name: string;
  role: Role;
  createdAt: string;
  updatedAt: string;
}

const toPublic = (u: User): PublicUser => ({ name: u.name, role: u.role, createdAt: u.createdAt, updatedAt: u.updatedAt });

export class UsersService {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditService,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async list(): Promise<PublicUser[]> {
    return (await this.store.read((r) => r.users.list())).map(toPublic);
  }

  async get(name: string): Promise<PublicUser> {
    const u = await this.store.read((r) => r.users.get(name));
    if (!u) throw new NotFound(`no user "${name}"`);
    return toPublic(u);
  }

  async create(actor: UserPrincipal | null, input: { name: string; password: string; role: Role }): Promise<PublicUser> {
    const passwordHash = await hashPassword(input.password);
    const at = this.now().toISOString();
    return this.store.tx(async (r) => {
      if (!(await r.users.insert({ name: input.name, role: input.role, passwordHash, at }))) {
        throw new Conflict(`user "${input.name}" already exists`);
      }
      await this.audit.record(r, {
        actor: actor?.name ?? 'system',
        actorKind: actor ? 'user' : 'system',
        action: 'user.create',
        target: input.name,
        details: { role: input.role },
      });
      return toPublic((await r.users.get(input.name))!);
    });
  }

  /**
   * The first administrator of an empty database; false when there is any user already. Replicas starting
   * together on one database may all find it empty before they get here: the check is made again inside the
   * unit of work, where writes run one at a time, so exactly one of them creates the administrator.
   */
  async createFirstAdmin(name: string, password: string): Promise<boolean> {
    const passwordHash = await hashPassword(password);
    const at = this.now().toISOString();
    return this.store.tx(async (r) => {
      if ((await r.users.count()) > 0) return false;
      await r.users.insert({ name, role: 'admin', passwordHash, at });
      await this.audit.record(r, { actor: 'system', actorKind: 'system', action: 'user.create', target: name, details: { role: 'admin' } });
      return true;
    });
  }

  async update(actor: UserPrincipal, name: string, patch: { password?: string; role?: Role }): Promise<PublicUser> {
    const passwordHash = patch.password === undefined ? undefined : await hashPassword(patch.password);
    return this.store.tx(async (r) => {
      const u = await r.users.get(name);
      if (!u) throw new NotFound(`no user "${name}"`);
      if (u.role === 'admin' && patch.role === 'member' && (await r.users.countAdmins()) <= 1) {
        throw new Conflict('the last administrator cannot be demoted', 'last-admin');
      }
      const demoted = u.role === 'admin' && patch.role === 'member';
      await r.users.update(name, {
        role: patch.role,
        passwordHash,
        bumpEpoch: demoted || passwordHash !== undefined,
        at: this.now().toISOString(),
      });
      await this.audit.record(r, {
        actor: actor.name,
        actorKind: 'user',
        action: 'user.update',
        target: name,
        details: { role: patch.role, passwordChanged: passwordHash !== undefined },
      });
      return toPublic((await r.users.get(name))!);
    });
  }

  async delete(actor: UserPrincipal, name: string): Promise<void> {
    await this.store.tx(async (r) => {
      const u = await r.users.get(name);
      if (!u) throw new NotFound(`no user "${name}"`);
      if (u.role === 'admin' && (await r.users.countAdmins()) <= 1) {
        throw new Conflict('the last administrator cannot be deleted', 'last-admin');
      }
      await r.users.delete(name);
      await this.audit.record(r, { actor: actor.name, actorKind: 'user', action: 'user.delete', target: name });
      // Their grants went with them, and so did the bindings made through those grants.
      await r.publish({ kind: 'bindings' });
    });
  }
}
