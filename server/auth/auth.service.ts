import type { AuditService } from '../audit/audit.service.js';
import { Unauthorized } from '../errors.js';
import type { Store } from '../store/store.js';
import { decoyHash, verifyPassword } from './passwords.js';
import type { LoginThrottle } from './throttle.js';
import { userTokenVersion, type IssuedToken, type TokenIssuer } from './tokens.js';

export class AuthService {
  constructor(
    private readonly store: Store,
    private readonly tokens: TokenIssuer,
    private readonly throttle: LoginThrottle,
    private readonly audit: AuditService,
  ) {}

  async login(username: string, password: string, ip: string): Promise<IssuedToken> {
    // Charged as a failure before the (slow) hash and refunded on success: otherwise many guesses sent at
    // once would all pass the check before any of them is counted.
    const user = await this.store.tx(async (r) => {
      await this.throttle.begin(r, ip, username);
      return r.users.get(username);
    });
    const ok = await verifyPassword(password, user?.passwordHash ?? (await decoyHash()));
    if (!user || !ok) {
      await this.audit.recordAlone({
        // An unknown name is not recorded as typed: it may be a password pasted into the wrong field.
        actor: user ? user.name : '(unknown user)',
        actorKind: 'anonymous',
        action: 'auth.login',
        result: 'failure',
        details: { ip },
      });
      // Same answer for unknown user and wrong password.
      throw new Unauthorized('invalid username or password', 'invalid-credentials');
    }
    await this.store.tx(async (r) => {
      await this.throttle.succeed(r, ip, username);
      await this.audit.record(r, { actor: user.name, actorKind: 'user', action: 'auth.login', details: { ip } });
    });
    return this.tokens.issue({ kind: 'user', name: user.name, role: user.role }, userTokenVersion(user));
  }
}
