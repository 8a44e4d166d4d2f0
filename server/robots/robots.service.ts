import crypto from 'node:crypto';
import type { Labels } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { Caller } from '../acl/caller.js';
import type { RobotPrincipal } from '../auth/principal.js';
import type { IdentityView } from '../identities/identities.service.js';
import { robotTokenVersion, type IssuedToken, type TokenIssuer } from '../auth/tokens.js';
import type { Db } from '../db/database.js';
import { Conflict, InvalidInput, NotFound, TooManyRequests, Unauthorized } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import { FailureWindow } from '../auth/throttle.js';
import { parseDeviceKey, storedDeviceKey, unverifiedSubject, verifyAssertion, type DeviceKey } from './device-key.js';
import { RobotsRepo, type EnrollmentTokenInfo, type Robot, type RobotReport } from './robots.repo.js';

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

export interface RobotDetail extends RobotView {
  report: RobotReport | null;
  /** Per-robot enclave certificates it was issued (those on enclaves the caller may read). */
  identities: IdentityView[];
  /** Administrators only: unused enrollment tokens (never the tokens themselves). */
  enrollmentTokens?: EnrollmentTokenInfo[];
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

export const ROBOT_NAME = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;
const MAX_CACHED_DEVICE_KEYS = 100_000;
const JTI_PURGE_INTERVAL_MS = 10_000;
const hashToken = (token: string) => crypto.createHash('sha256').update(token).digest('hex');

export interface RobotsServiceOptions {
  /** Failed enrollments and robot logins one address may make per window before they are answered 429. */
  maxFailuresPerAddress: number;
  failureWindowMs: number;
}

/** What the robot registry needs of per-robot identities (server/identities), which are built after it. */
export interface RobotIdentities {
  visible(caller: Caller, robot: string): IdentityView[];
  /** Inside a write transaction: revokes every certificate of the robot still good; the keystores whose CRL changed. */
  revokeAllOf(robot: string): { keystores: string[]; serials: string[] };
}

/** The robot registry, enrollment (one-time tokens, device keys) and robot login. */
export class RobotsService {
  readonly repo: RobotsRepo;
  /** Set once when the app is built (the identities service needs this registry's repository first). */
  identities: RobotIdentities = { visible: () => [], revokeAllOf: () => ({ keystores: [], serials: [] }) };
  private readonly failures: FailureWindow;
  private readonly deviceKeys = new Map<string, DeviceKey>();
  private lastJtiPurge = -Infinity;
  /**
   * The replay record and the audit entry of a login in one write transaction (one commit, not three);
   * expired replay records are swept at most every few seconds, not on every login of a boot storm.
   */
  private readonly acceptAssertion: (robot: string, keyId: string, jti: string, keepUntil: string, ip: string, nowMs: number) => boolean;
  constructor(
    private readonly db: Db,
    private readonly tokens: TokenIssuer,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
    opts: RobotsServiceOptions = { maxFailuresPerAddress: 100, failureWindowMs: 15 * 60_000 },
  ) {
    this.repo = new RobotsRepo(db);
    const accept = db.transaction((robot: string, keyId: string, jti: string, keepUntil: string, ip: string, nowMs: number) => {
      if (nowMs - this.lastJtiPurge >= JTI_PURGE_INTERVAL_MS) {
        this.repo.purgeAssertions(new Date(nowMs).toISOString());
        this.lastJtiPurge = nowMs;
      }
      if (!this.repo.recordAssertion(jti, robot, keepUntil)) return false;
      this.audit.record({ actor: robot, actorKind: 'robot', action: 'auth.robot', details: { ip, keyFingerprint: keyId } });
      return true;
    });
    this.acceptAssertion = accept.immediate.bind(accept) as typeof this.acceptAssertion;
    this.failures = new FailureWindow(opts.maxFailuresPerAddress, opts.failureWindowMs, () => this.now().getTime());
  }

  private robot(name: string): Robot {
    const r = this.repo.get(name);
    if (!r) throw new NotFound(`no robot "${name}"`);
    return r;
  }

  /** Admins see every robot; a member sees those their bind grants may reach (so they can bind to them). */
  list(caller: Caller): RobotView[] {
    return this.repo
      .list()
      .filter((r) => caller.robotVisible(r.labels))
      .map(toRobotView);
  }

  get(caller: Caller, name: string): RobotDetail {
    const r = this.repo.get(name);
    if (!r) throw new NotFound(`no robot "${name}"`);
    if (!caller.robotVisible(r.labels)) throw caller.robotNotVisible(name);
    const report = this.repo.report(name) ?? null;
    // What the robot holds is shown only for enclaves the caller may read: names must not leak.
    if (report && !caller.isAdmin) {
      report.enclaves = report.enclaves.filter((e) => caller.can('read', e.keystore, e.path));
    }
    const detail: RobotDetail = { ...toRobotView(r), report, identities: this.identities.visible(caller, name) };
    if (caller.isAdmin) detail.enrollmentTokens = this.repo.outstandingEnrollmentTokens(name, this.now().toISOString());
    return detail;
  }

  create(caller: Caller, name: string, labels: Labels): RobotView {
    const allowedBy = caller.requireAdmin('robot:manage');
    if (!ROBOT_NAME.test(name)) throw new InvalidInput('name: lowercase letters, digits, ".", "_" or "-" (1-63), starting and ending alphanumeric');
    this.db.transaction(() => {
      if (!this.repo.insert(name, labels, this.now().toISOString())) throw new Conflict(`robot "${name}" already exists`);
      this.audit.record({ actor: caller.name, actorKind: 'user', action: 'robot.create', target: name, grantId: allowedBy, details: { labels } });
    }).immediate();
    this.changes.publish({ kind: 'robot', robot: name });
    return toRobotView(this.robot(name));
  }

  setLabels(caller: Caller, name: string, labels: Labels): RobotView {
    const allowedBy = caller.requireAdmin('robot:manage');
    this.db.transaction(() => {
      const before = this.robot(name);
      this.repo.setLabels(name, labels, this.now().toISOString());
      this.audit.record({ actor: caller.name, actorKind: 'user', action: 'robot.update', target: name, grantId: allowedBy, details: { from: before.labels, labels } });
    }).immediate();
    this.changes.publish({ kind: 'robot', robot: name });
    return toRobotView(this.robot(name));
  }

  /**
   * Its enrollment tokens, bindings, report and identity rows go with it (foreign keys); the per-robot
   * certificates it held are revoked first, so a copy of them is refused by every peer with the new CRL.
   */
  delete(caller: Caller, name: string): void {
    const allowedBy = caller.requireAdmin('robot:manage');
    const revoked = this.db.transaction(() => {
      if (!this.repo.get(name)) throw new NotFound(`no robot "${name}"`);
      const identities = this.identities.revokeAllOf(name);
      this.repo.remove(name);
      this.audit.record({ actor: caller.name, actorKind: 'user', action: 'robot.delete', target: name, grantId: allowedBy, details: { revokedSerials: identities.serials } });
      return identities.keystores;
    }).immediate();
    this.changes.publish({ kind: 'robot', robot: name });
    for (const keystore of revoked) this.changes.publish({ kind: 'keystore', keystore });
  }

  /**
   * Forgets the device key and burns every unused enrollment token: the robot's tokens stop working at once,
   * and it can come back only with a token minted after this.
   */
  revokeKey(caller: Caller, name: string): RobotView {
    const allowedBy = caller.requireAdmin('robot:manage');
    const revoked = this.db.transaction(() => {
      const r = this.robot(name);
      const at = this.now().toISOString();
      this.repo.setKey(name, null, at);
      const burnt = this.repo.burnAllEnrollmentTokens(name, at);
      // A robot whose device key is revoked may be in someone else's hands: its enclave certificates go too.
      const identities = this.identities.revokeAllOf(name);
      this.audit.record({
        actor: caller.name,
        actorKind: 'user',
        action: 'robot.revoke-key',
        target: name,
        grantId: allowedBy,
        details: { keyFingerprint: r.keyId, enrollmentTokensBurnt: burnt, revokedSerials: identities.serials },
      });
      return identities.keystores;
    }).immediate();
    this.changes.publish({ kind: 'robot', robot: name });
    for (const keystore of revoked) this.changes.publish({ kind: 'keystore', keystore });
    return toRobotView(this.robot(name));
  }

  /**
   * A one-time token. For a robot that is already enrolled, only a re-enrollment token (`reenroll`) makes
   * sense: it lets a new device key replace the current one, so it must be asked for explicitly.
   */
  createEnrollmentToken(caller: Caller, name: string, ttlSeconds: number, reenroll = false): IssuedToken & { reenroll: boolean } {
    const allowedBy = caller.requireAdmin('robot:manage');
    const token = `et_${crypto.randomBytes(32).toString('base64url')}`;
    const now = this.now();
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000).toISOString();
    this.db.transaction(() => {
      const r = this.robot(name);
      if (r.keyId !== null && !reenroll) {
        throw new Conflict(
          `robot "${name}" is enrolled already: a token that replaces its device key must be asked for as a re-enrollment (reenroll: true; enclavectl robot token ${name} --reenroll)`,
          'robot-enrolled',
        );
      }
      this.repo.insertEnrollmentToken(hashToken(token), name, expiresAt, caller.name, now.toISOString(), reenroll);
      this.audit.record({ actor: caller.name, actorKind: 'user', action: 'robot.enrollment-token', target: name, grantId: allowedBy, details: { expiresAt, reenroll } });
    }).immediate();
    return { token, expiresAt, reenroll };
  }

  /**
   * Burns the one-time token (and every other unused token of the robot) and registers the device key, in one
   * transaction: one winner per token, and a leftover token cannot take the robot over later. A robot that
   * has a device key is enrolled again only with a re-enrollment token.
   */
  enroll(token: string, publicKeyPem: string, agentVersion: string | undefined, ip: string): RobotView {
    const key = parseDeviceKey(publicKeyPem);
    const now = this.now().toISOString();
    const outcome = this.db
      .transaction((): { robot: string } | { refused: string } => {
        const burnt = this.repo.burnEnrollmentToken(hashToken(token), now);
        if (!burnt) return { refused: 'enrollment token is invalid, expired or already used' };
        const current = this.repo.get(burnt.robot);
        if (current?.keyId && !burnt.reenroll) {
          // The token is spent either way: it was minted before the robot enrolled and must not linger.
          return { refused: 'enrollment token is invalid, expired or already used' };
        }
        this.repo.setKey(burnt.robot, { publicKey: key.publicKeyPem, keyId: key.keyId, agentVersion: agentVersion ?? null }, now);
        const others = this.repo.burnAllEnrollmentTokens(burnt.robot, now);
        this.audit.record({
          actor: burnt.robot,
          actorKind: 'robot',
          action: 'robot.enroll',
          target: burnt.robot,
          details: { keyFingerprint: key.keyId, ip, agentVersion, reenroll: burnt.reenroll, replacedKey: current?.keyId ?? null, otherTokensBurnt: others },
        });
        return { robot: burnt.robot };
      })
      .immediate();
    if ('refused' in outcome) this.refuse('robot.enroll', 'unknown', ip, outcome.refused, new Unauthorized(outcome.refused, 'invalid-enrollment-token'));
    const robot = (outcome as { robot: string }).robot;
    // Its first login will need the key object this enrollment already made.
    this.remember(key);
    this.changes.publish({ kind: 'robot', robot });
    return toRobotView(this.robot(robot));
  }

  /** The credential is checked first: a valid assertion is never refused by the failure limit. */
  login(assertion: string, ip: string): IssuedToken {
    const name = unverifiedSubject(assertion);
    const robot = this.repo.get(name);
    const refuse = (why: string): never =>
      this.refuse('auth.robot', robot ? robot.name : '(unknown robot)', ip, why, new Unauthorized('assertion refused', 'invalid-assertion'));
    if (!robot || !robot.publicKey || !robot.keyId) return refuse('unknown or unenrolled robot');
    const key = this.deviceKey(robot.keyId, robot.publicKey);
    let claims;
    try {
      claims = verifyAssertion(assertion, key, robot.name, this.now().getTime());
    } catch (err) {
      return refuse((err as Error).message);
    }
    const nowMs = this.now().getTime();
    // Kept until the assertion's own expiry (plus tolerance): a replay inside its lifetime is refused.
    const keepUntil = new Date((claims.exp + 120) * 1000).toISOString();
    if (!this.acceptAssertion(robot.name, robot.keyId, claims.jti, keepUntil, ip, nowMs)) return refuse('replayed jti');
    return this.tokens.issue({ kind: 'robot', name: robot.name, keyId: robot.keyId }, robotTokenVersion(robot));
  }

  /**
   * The robot's parsed device key, kept by key id (a hash of the key, so a new enrollment never meets an old
   * entry). Bounded: past the limit the cache starts again rather than grow with every robot ever seen.
   */
  private deviceKey(keyId: string, pem: string): DeviceKey {
    let key = this.deviceKeys.get(keyId);
    if (!key) {
      key = storedDeviceKey(pem, keyId);
      this.remember(key);
    }
    return key;
  }

  private remember(key: DeviceKey): void {
    if (this.deviceKeys.size >= MAX_CACHED_DEVICE_KEYS) this.deviceKeys.clear();
    this.deviceKeys.set(key.keyId, key);
  }

  /** A failed unauthenticated attempt: audited, until the address is over its limit (then 429, not audited). */
  private refuse(action: string, actor: string, ip: string, reason: string, err: Error): never {
    const wait = this.failures.fail(ip);
    if (wait > 0) throw new TooManyRequests('too many failed attempts from this address, try again later', wait);
    this.audit.record({ actor, actorKind: 'anonymous', action, result: 'failure', details: { ip, reason } });
    throw err;
  }

  report(robot: RobotPrincipal, rep: Omit<RobotReport, 'reportedAt' | 'lastSeenAt'>): void {
    this.repo.upsertReport(robot.name, rep, this.now().toISOString());
  }
}
