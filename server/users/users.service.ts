import type { Db } from '../db/database.js';
import type { AuditService } from '../audit/audit.service.js';
import { hashPassword } from '../auth/passwords.js';
import type { Role, UserPrincipal } from '../auth/principal.js';
import { Conflict, NotFound } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import { UsersRepo, type User } from './users.repo.js';

export interface PublicUser {
  name: string;
  role: Role;
  createdAt: string;
  updatedAt: string;
}

const toPublic = (u: User): PublicUser => ({ name: u.name, role: u.role, createdAt: u.createdAt, updatedAt: u.updatedAt });

export class UsersService {
  readonly repo: UsersRepo;
  constructor(
    private readonly db: Db,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.repo = new UsersRepo(db);
  }

  list(): PublicUser[] {
    return this.repo.list().map(toPublic);
  }

  get(name: string): PublicUser {
    const u = this.repo.get(name);
    if (!u) throw new NotFound(`no user "${name}"`);
    return toPublic(u);
  }

  async create(actor: UserPrincipal | null, input: { name: string; password: string; role: Role }): Promise<PublicUser> {
    const passwordHash = await hashPassword(input.password);
    const at = this.now().toISOString();
    if (!this.repo.insert({ name: input.name, role: input.role, passwordHash, at })) {
      throw new Conflict(`user "${input.name}" already exists`);
    }
    this.audit.record({
      actor: actor?.name ?? 'system',
      actorKind: actor ? 'user' : 'system',
      action: 'user.create',
      target: input.name,
      details: { role: input.role },
    });
    return this.get(input.name);
  }

  async update(actor: UserPrincipal, name: string, patch: { password?: string; role?: Role }): Promise<PublicUser> {
    const passwordHash = patch.password === undefined ? undefined : await hashPassword(patch.password);
    this.db.transaction(() => {
      const u = this.repo.get(name);
      if (!u) throw new NotFound(`no user "${name}"`);
      if (u.role === 'admin' && patch.role === 'member' && this.repo.countAdmins() <= 1) {
        throw new Conflict('the last administrator cannot be demoted', 'last-admin');
      }
      const demoted = u.role === 'admin' && patch.role === 'member';
      this.repo.update(name, {
        role: patch.role,
        passwordHash,
        bumpEpoch: demoted || passwordHash !== undefined,
        at: this.now().toISOString(),
      });
      this.audit.record({
        actor: actor.name,
        actorKind: 'user',
        action: 'user.update',
        target: name,
        details: { role: patch.role, passwordChanged: passwordHash !== undefined },
      });
    }).immediate();
    return this.get(name);
  }

  delete(actor: UserPrincipal, name: string): void {
    this.db.transaction(() => {
      const u = this.repo.get(name);
      if (!u) throw new NotFound(`no user "${name}"`);
      if (u.role === 'admin' && this.repo.countAdmins() <= 1) {
        throw new Conflict('the last administrator cannot be deleted', 'last-admin');
      }
      this.repo.delete(name);
      this.audit.record({ actor: actor.name, actorKind: 'user', action: 'user.delete', target: name });
    }).immediate();
    // Their grants went with them, and so did the bindings made through those grants.
    this.changes.publish({ kind: 'bindings' });
  }
}
