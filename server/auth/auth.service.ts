import type { AuditService } from '../audit/audit.service.js';
import { Unauthorized } from '../errors.js';
import type { UsersRepo } from '../users/users.repo.js';
import { decoyHash, verifyPassword } from './passwords.js';
import type { LoginLimiter } from './rate-limit.js';
import type { IssuedToken, TokenIssuer } from './tokens.js';

export class AuthService {
  constructor(
    private readonly users: UsersRepo,
    private readonly tokens: TokenIssuer,
    private readonly limiter: LoginLimiter,
    private readonly audit: AuditService,
  ) {}

  async login(username: string, password: string, ip: string): Promise<IssuedToken> {
    this.limiter.check(ip, username);
    const user = this.users.get(username);
    const ok = await verifyPassword(password, user?.passwordHash ?? (await decoyHash()));
    if (!user || !ok) {
      this.limiter.fail(ip, username);
      this.audit.record({
        actor: username,
        actorKind: 'anonymous',
        action: 'auth.login',
        result: 'failure',
        details: { ip },
      });
      // Same answer for unknown user and wrong password.
      throw new Unauthorized('invalid username or password', 'invalid-credentials');
    }
    this.limiter.succeed(username);
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'auth.login', details: { ip } });
    return this.tokens.issue({ kind: 'user', name: user.name, role: user.role }, String(user.tokenEpoch));
  }
}
