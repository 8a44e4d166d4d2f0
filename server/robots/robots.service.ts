import crypto from 'node:crypto';
import type { Labels } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { RobotPrincipal, UserPrincipal } from '../auth/principal.js';
import { robotTokenVersion, type IssuedToken, type TokenIssuer } from '../auth/tokens.js';
import type { Db } from '../db/database.js';
import { Conflict, Forbidden, InvalidInput, NotFound, Unauthorized } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import type { Access } from '../acl/access.js';
import { LoginLimiter } from '../auth/rate-limit.js';
import { parseDeviceKey, unverifiedSubject, verifyAssertion } from './device-key.js';
import { RobotsRepo, type Robot, type RobotReport } from './robots.repo.js';

export interface RobotView {
  name: string;
  labels: Labels;
  enrolled: boolean;
  enrolledAt: string | null;
  keyFingerprint: string | null;
  agentVersion: string | null;
  createdAt: string;
  updatedAt: string;
}

export const toRobotView = (r: Robot): RobotView => ({
  name: r.name,
  labels: r.labels,
  enrolled: r.keyId !== null,
  enrolledAt: r.enrolledAt,
  keyFingerprint: r.keyId,
  agentVersion: r.agentVersion,
  createdAt: r.createdAt,
  updatedAt: r.updatedAt,
});

/** One key for every robot: the limit that matters here is per client address. */
const ANY = '*';

export const ROBOT_NAME = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
const hashToken = (token: string) => crypto.createHash('sha256').update(token).digest('hex');

/** The robot registry, enrollment (one-time tokens, device keys) and robot login. */
export class RobotsService {
  readonly repo: RobotsRepo;
  /**
   * Failed enrollments and robot logins per client address (100 per 15 min, then 429): each failure writes
   * an audit entry, so an unauthenticated client must not be able to grow the log without bound. Only
   * failures count: a fleet behind one NAT address logging in correctly is never slowed down.
   */
  private readonly anonymousFailures = new LoginLimiter(Number.MAX_SAFE_INTEGER, 100);
  constructor(
    private readonly db: Db,
    private readonly access: Access,
    private readonly tokens: TokenIssuer,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
  ) {
    this.repo = new RobotsRepo(db);
  }

  private requireAdmin(user: UserPrincipal, what: string): void {
    if (user.role !== 'admin') throw new Forbidden(`only administrators may ${what}`);
  }

  private robot(name: string): Robot {
    const r = this.repo.get(name);
    if (!r) throw new NotFound(`no robot "${name}"`);
    return r;
  }

  /** Admins see every robot; a member sees those their bind grants may reach (so they can bind to them). */
  list(user: UserPrincipal): RobotView[] {
    return this.repo
      .list()
      .filter((r) => this.access.robotVisible(user, r.labels))
      .map(toRobotView);
  }

  get(user: UserPrincipal, name: string): RobotView & { report: RobotReport | null } {
    const r = this.repo.get(name);
    if (!r || !this.access.robotVisible(user, r.labels)) throw new NotFound(`no robot "${name}"`);
    const report = this.repo.report(name) ?? null;
    // What the robot holds is shown only for enclaves the caller may read: names must not leak.
    if (report && user.role !== 'admin') {
      report.enclaves = report.enclaves.filter((e) => this.access.can(user, 'read', e.keystore, e.path));
    }
    return { ...toRobotView(r), report };
  }

  create(user: UserPrincipal, name: string, labels: Labels): RobotView {
    this.requireAdmin(user, 'register robots');
    if (!ROBOT_NAME.test(name)) throw new InvalidInput('name: lowercase letters, digits, ".", "_" or "-" (1-63), starting and ending alphanumeric');
    if (!this.repo.insert(name, labels, this.now().toISOString())) throw new Conflict(`robot "${name}" already exists`);
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'robot.create', target: name, grantId: 'admin', details: { labels } });
    this.changes.publish({ kind: 'robot', robot: name });
    return toRobotView(this.robot(name));
  }

  setLabels(user: UserPrincipal, name: string, labels: Labels): RobotView {
    this.requireAdmin(user, 'change robots');
    const before = this.robot(name);
    this.repo.setLabels(name, labels, this.now().toISOString());
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'robot.update', target: name, grantId: 'admin', details: { from: before.labels, labels } });
    this.changes.publish({ kind: 'robot', robot: name });
    return toRobotView(this.robot(name));
  }

  delete(user: UserPrincipal, name: string): void {
    this.requireAdmin(user, 'delete robots');
    this.robot(name);
    this.repo.remove(name);
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'robot.delete', target: name, grantId: 'admin' });
    this.changes.publish({ kind: 'robot', robot: name });
  }

  /** Forgets the device key: the robot's tokens stop working at once; it must enroll again. */
  revokeKey(user: UserPrincipal, name: string): RobotView {
    this.requireAdmin(user, 'revoke device keys');
    const r = this.robot(name);
    this.repo.setKey(name, null, this.now().toISOString());
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'robot.revoke-key', target: name, grantId: 'admin', details: { keyFingerprint: r.keyId } });
    this.changes.publish({ kind: 'robot', robot: name });
    return toRobotView(this.robot(name));
  }

  createEnrollmentToken(user: UserPrincipal, name: string, ttlSeconds: number): IssuedToken {
    this.requireAdmin(user, 'create enrollment tokens');
    this.robot(name);
    const token = `et_${crypto.randomBytes(32).toString('base64url')}`;
    const now = this.now();
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000).toISOString();
    this.repo.insertEnrollmentToken(hashToken(token), name, expiresAt, user.name, now.toISOString());
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'robot.enrollment-token', target: name, grantId: 'admin', details: { expiresAt } });
    return { token, expiresAt };
  }

  /** Burns the one-time token and registers the device key in one transaction: one winner per token. */
  enroll(token: string, publicKeyPem: string, agentVersion: string | undefined, ip: string): RobotView {
    this.anonymousFailures.check(ip, ANY);
    const key = parseDeviceKey(publicKeyPem);
    const now = this.now().toISOString();
    const robot = this.db
      .transaction(() => {
        const name = this.repo.burnEnrollmentToken(hashToken(token), now);
        if (!name) return undefined;
        this.repo.setKey(name, { publicKey: key.publicKeyPem, keyId: key.keyId, agentVersion: agentVersion ?? null }, now);
        this.audit.record({ actor: name, actorKind: 'robot', action: 'robot.enroll', target: name, details: { keyFingerprint: key.keyId, ip, agentVersion } });
        return name;
      })
      .immediate();
    if (!robot) {
      this.anonymousFailures.fail(ip, ANY);
      this.audit.record({ actor: 'unknown', actorKind: 'anonymous', action: 'robot.enroll', result: 'failure', details: { ip } });
      throw new Unauthorized('enrollment token is invalid, expired or already used', 'invalid-enrollment-token');
    }
    this.changes.publish({ kind: 'robot', robot });
    return toRobotView(this.robot(robot));
  }

  login(assertion: string, ip: string): IssuedToken {
    this.anonymousFailures.check(ip, ANY);
    const name = unverifiedSubject(assertion);
    const robot = this.repo.get(name);
    const refuse = (why: string): never => {
      this.anonymousFailures.fail(ip, ANY);
      this.audit.record({ actor: robot ? robot.name : '(unknown robot)', actorKind: 'anonymous', action: 'auth.robot', result: 'failure', details: { ip, reason: why } });
      throw new Unauthorized('assertion refused', 'invalid-assertion');
    };
    if (!robot || !robot.publicKey || !robot.keyId) return refuse('unknown or unenrolled robot');
    const key = parseDeviceKey(robot.publicKey);
    let claims;
    try {
      claims = verifyAssertion(assertion, key, robot.name, this.now().getTime());
    } catch (err) {
      return refuse((err as Error).message);
    }
    const nowIso = this.now().toISOString();
    this.repo.purgeAssertions(nowIso);
    // Kept until the assertion's own expiry (plus tolerance): a replay inside its lifetime is refused.
    const keepUntil = new Date((claims.exp + 120) * 1000).toISOString();
    if (!this.repo.recordAssertion(claims.jti, robot.name, keepUntil)) return refuse('replayed jti');
    this.audit.record({ actor: robot.name, actorKind: 'robot', action: 'auth.robot', details: { ip, keyFingerprint: robot.keyId } });
    return this.tokens.issue({ kind: 'robot', name: robot.name, keyId: robot.keyId }, robotTokenVersion(robot));
  }

  report(robot: RobotPrincipal, rep: Omit<RobotReport, 'reportedAt' | 'lastSeenAt'>): void {
    this.repo.upsertReport(robot.name, rep, this.now().toISOString());
  }
}
