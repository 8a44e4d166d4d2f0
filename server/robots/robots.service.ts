import crypto from 'node:crypto';
import type { Labels } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { Caller } from '../acl/caller.js';
import type { RobotPrincipal } from '../auth/principal.js';
import type { IdentityView } from '../identities/identities.service.js';
import { robotTokenVersion, type IssuedToken, type TokenIssuer } from '../auth/tokens.js';
import { Conflict, InvalidInput, NotFound, TooManyRequests, Unauthorized } from '../errors.js';
import { FailureWindow } from '../auth/throttle.js';
import { parseDeviceKey, storedDeviceKey, unverifiedSubject, verifyAssertion, type DeviceKey } from './device-key.js';
import type { Repos, Store } from '../store/store.js';
import { ForeignKeyViolation } from '../store/errors.js';
import type { EnrollmentTokenInfo, Robot, RobotReport } from './robots.repo.js';

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
  visible(caller: Caller, robot: string): Promise<IdentityView[]>;
  /** Inside the caller's unit of work: revokes every certificate of the robot still good; the keystores whose CRL changed. */
  revokeAllOf(r: Repos, robot: string): Promise<{ keystores: string[]; serials: string[] }>;
}

/** A robot's accepted login: its token, and what a bundle answered with it is checked against. */
export interface RobotSignedIn {
  issued: IssuedToken;
  robot: string;
  /** The token's `ver`: the enrollment the assertion was checked against. */
  ver: string;
}

/**
 * What a caller adds to an accepted login: read once the signature is checked (`prepare`), written inside the
 * login's unit of work (`write`), so a boot's rows share its commit. `write` may run twice (a group that
 * failed reruns each member alone): it must not remember anything itself.
 */
export interface LoginExtra<T> {
  prepare(robot: string, ver: string): Promise<T>;
  write(r: Repos, prepared: T): Promise<void>;
}

const notFound = (name: string) => new NotFound(`no robot "${name}"`);

async function robotIn(r: Repos, name: string): Promise<Robot> {
  const robot = await r.robots.get(name);
  if (!robot) throw notFound(name);
  return robot;
}

/** The robot registry, enrollment (one-time tokens, device keys) and robot login. */
export class RobotsService {
  /** Set once when the app is built (the identities service needs this registry first). */
  identities: RobotIdentities = { visible: async () => [], revokeAllOf: async () => ({ keystores: [], serials: [] }) };
  private readonly failures: FailureWindow;
  private readonly deviceKeys = new Map<string, DeviceKey>();
  private lastJtiPurge = -Infinity;

  constructor(
    private readonly store: Store,
    private readonly tokens: TokenIssuer,
    private readonly audit: AuditService,
    private readonly now: () => Date,
    opts: RobotsServiceOptions = { maxFailuresPerAddress: 100, failureWindowMs: 15 * 60_000 },
  ) {
    this.failures = new FailureWindow(opts.maxFailuresPerAddress, opts.failureWindowMs, () => this.now().getTime());
  }

  /** Admins see every robot; a member sees those their bind grants may reach (so they can bind to them). */
  async list(caller: Caller): Promise<RobotView[]> {
    return (await this.store.read((r) => r.robots.list())).filter((r) => caller.robotVisible(r.labels)).map(toRobotView);
  }

  async get(caller: Caller, name: string): Promise<RobotDetail> {
    const { robot, report, tokens } = await this.store.read(async (r) => {
      const robot = await robotIn(r, name);
      if (!caller.robotVisible(robot.labels)) throw caller.robotNotVisible(name);
      return {
        robot,
        report: (await r.robots.report(name)) ?? null,
        tokens: caller.isAdmin ? await r.robots.outstandingEnrollmentTokens(name, this.now().toISOString()) : undefined,
      };
    });
    // What the robot holds is shown only for enclaves the caller may read: names must not leak.
    if (report && !caller.isAdmin) {
      report.enclaves = report.enclaves.filter((e) => caller.can('read', e.keystore, e.path));
    }
    const detail: RobotDetail = { ...toRobotView(robot), report, identities: await this.identities.visible(caller, name) };
    if (tokens) detail.enrollmentTokens = tokens;
    return detail;
  }

  async create(caller: Caller, name: string, labels: Labels): Promise<RobotView> {
    const allowedBy = caller.requireAdmin('robot:manage');
    if (!ROBOT_NAME.test(name)) throw new InvalidInput('name: lowercase letters, digits, ".", "_" or "-" (1-63), starting and ending alphanumeric');
    return this.store.tx(async (r) => {
      if (!(await r.robots.insert(name, labels, this.now().toISOString()))) throw new Conflict(`robot "${name}" already exists`);
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'robot.create', target: name, grantId: allowedBy, details: { labels } });
      await r.publish({ kind: 'robot', robot: name });
      return toRobotView(await robotIn(r, name));
    });
  }

  async setLabels(caller: Caller, name: string, labels: Labels): Promise<RobotView> {
    const allowedBy = caller.requireAdmin('robot:manage');
    return this.store.tx(async (r) => {
      const before = await robotIn(r, name);
      await r.robots.setLabels(name, labels, this.now().toISOString());
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'robot.update', target: name, grantId: allowedBy, details: { from: before.labels, labels } });
      await r.publish({ kind: 'robot', robot: name });
      return toRobotView(await robotIn(r, name));
    });
  }

  /**
   * Its enrollment tokens, bindings, report and identity rows go with it (foreign keys); the per-robot
   * certificates it held are revoked first, so a copy of them is refused by every peer with the new CRL.
   */
  async delete(caller: Caller, name: string): Promise<void> {
    const allowedBy = caller.requireAdmin('robot:manage');
    await this.store.tx(async (r) => {
      await robotIn(r, name);
      const identities = await this.identities.revokeAllOf(r, name);
      await r.robots.remove(name);
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'robot.delete', target: name, grantId: allowedBy, details: { revokedSerials: identities.serials } });
      await r.publish({ kind: 'robot', robot: name });
      for (const keystore of identities.keystores) await r.publish({ kind: 'keystore', keystore });
    });
  }

  /**
   * Forgets the device key and burns every unused enrollment token: the robot's tokens stop working at once,
   * and it can come back only with a token minted after this.
   */
  async revokeKey(caller: Caller, name: string): Promise<RobotView> {
    const allowedBy = caller.requireAdmin('robot:manage');
    return this.store.tx(async (r) => {
      const robot = await robotIn(r, name);
      const at = this.now().toISOString();
      await r.robots.setKey(name, null, at);
      const burnt = await r.robots.burnAllEnrollmentTokens(name, at);
      // A robot whose device key is revoked may be in someone else's hands: its enclave certificates go too.
      const identities = await this.identities.revokeAllOf(r, name);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'robot.revoke-key',
        target: name,
        grantId: allowedBy,
        details: { keyFingerprint: robot.keyId, enrollmentTokensBurnt: burnt, revokedSerials: identities.serials },
      });
      await r.publish({ kind: 'robot', robot: name });
      for (const keystore of identities.keystores) await r.publish({ kind: 'keystore', keystore });
      return toRobotView(await robotIn(r, name));
    });
  }

  /**
   * A one-time token. For a robot that is already enrolled, only a re-enrollment token (`reenroll`) makes
   * sense: it lets a new device key replace the current one, so it must be asked for explicitly.
   */
  async createEnrollmentToken(caller: Caller, name: string, ttlSeconds: number, reenroll = false): Promise<IssuedToken & { reenroll: boolean }> {
    const allowedBy = caller.requireAdmin('robot:manage');
    const token = `et_${crypto.randomBytes(32).toString('base64url')}`;
    const now = this.now();
    const expiresAt = new Date(now.getTime() + ttlSeconds * 1000).toISOString();
    await this.store.tx(async (r) => {
      const robot = await robotIn(r, name);
      if (robot.keyId !== null && !reenroll) {
        throw new Conflict(
          `robot "${name}" is enrolled already: a token that replaces its device key must be asked for as a re-enrollment (reenroll: true; enclavectl robot token ${name} --reenroll)`,
          'robot-enrolled',
        );
      }
      await r.robots.insertEnrollmentToken(hashToken(token), name, expiresAt, caller.name, now.toISOString(), reenroll);
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'robot.enrollment-token', target: name, grantId: allowedBy, details: { expiresAt, reenroll } });
    });
    return { token, expiresAt, reenroll };
  }

  /**
   * Burns the one-time token (and every other unused token of the robot) and registers the device key, in one
   * unit of work: one winner per token (on every replica: the burn is one conditional UPDATE under the write
   * lock), and a leftover token cannot take the robot over later. A robot that has a device key is enrolled
   * again only with a re-enrollment token.
   */
  async enroll(token: string, publicKeyPem: string, agentVersion: string | undefined, ip: string): Promise<RobotView> {
    const key = parseDeviceKey(publicKeyPem);
    const now = this.now().toISOString();
    const refused = 'enrollment token is invalid, expired or already used';
    const outcome = await this.store.tx(async (r): Promise<{ view: RobotView } | { refused: string }> => {
      const burnt = await r.robots.burnEnrollmentToken(hashToken(token), now);
      if (!burnt) return { refused };
      const current = await r.robots.get(burnt.robot);
      if (current?.keyId && !burnt.reenroll) {
        // The token is spent either way: it was minted before the robot enrolled and must not linger.
        return { refused };
      }
      await r.robots.setKey(burnt.robot, { publicKey: key.publicKeyPem, keyId: key.keyId, agentVersion: agentVersion ?? null }, now);
      const others = await r.robots.burnAllEnrollmentTokens(burnt.robot, now);
      await this.audit.record(r, {
        actor: burnt.robot,
        actorKind: 'robot',
        action: 'robot.enroll',
        target: burnt.robot,
        details: { keyFingerprint: key.keyId, ip, agentVersion, reenroll: burnt.reenroll, replacedKey: current?.keyId ?? null, otherTokensBurnt: others },
      });
      await r.publish({ kind: 'robot', robot: burnt.robot });
      return { view: toRobotView(await robotIn(r, burnt.robot)) };
    });
    if ('refused' in outcome) return this.refuse('robot.enroll', 'unknown', ip, outcome.refused, new Unauthorized(outcome.refused, 'invalid-enrollment-token'));
    // Its first login will need the key object this enrollment already made.
    this.remember(key);
    return outcome.view;
  }

  /**
   * The credential is checked first: a valid assertion is never refused by the failure limit. The signature is
   * checked before the unit of work (which holds the write lock every replica shares); inside it, the replay
   * record and the audit entry commit together, in one commit with the other logins of the moment (a boot storm's
   * cost was one commit per login), and expired replay records are swept at most every few seconds. A key revoked between the read and the unit of
   * work is not looked for again: the token carries the key's version, so the robot's next request is refused.
   */
  async login<T = undefined>(assertion: string, ip: string, extra?: LoginExtra<T>): Promise<RobotSignedIn & { extra?: T }> {
    const name = unverifiedSubject(assertion);
    const robot = await this.store.read((r) => r.robots.get(name));
    const refuse = (why: string): Promise<never> =>
      this.refuse('auth.robot', robot ? robot.name : '(unknown robot)', ip, why, new Unauthorized('assertion refused', 'invalid-assertion'));
    if (!robot || !robot.publicKey || !robot.keyId) return refuse('unknown or unenrolled robot');
    const keyId = robot.keyId;
    const key = this.deviceKey(keyId, robot.publicKey);
    const nowMs = this.now().getTime();
    let claims;
    try {
      claims = verifyAssertion(assertion, key, robot.name, nowMs);
    } catch (err) {
      return refuse((err as Error).message);
    }
    // Kept until the assertion's own expiry (plus tolerance): a replay inside its lifetime is refused.
    const keepUntil = new Date((claims.exp + 120) * 1000).toISOString();
    const jti = claims.jti;
    const ver = robotTokenVersion(robot);
    const prepared = extra ? await extra.prepare(robot.name, ver) : undefined;
    const accepted = await this.store.grouped(async (r) => {
      if (nowMs - this.lastJtiPurge >= JTI_PURGE_INTERVAL_MS) {
        await r.robots.purgeAssertions(new Date(nowMs).toISOString());
        this.lastJtiPurge = nowMs;
      }
      if (!(await r.robots.recordAssertion(jti, robot.name, keepUntil))) return false;
      await this.audit.record(r, { actor: robot.name, actorKind: 'robot', action: 'auth.robot', details: { ip, keyFingerprint: keyId } });
      if (extra) await extra.write(r, prepared as T);
      return true;
    });
    if (!accepted) return refuse('replayed jti');
    return { issued: this.tokens.issue({ kind: 'robot', name: robot.name, keyId }, ver), robot: robot.name, ver, extra: prepared };
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

  /**
   * A failed unauthenticated attempt: audited, until the address is over its limit (then 429, not audited). The
   * count (in the database: one allowance for every replica) and the audit row are one unit of work.
   */
  private async refuse(action: string, actor: string, ip: string, reason: string, err: Error): Promise<never> {
    const wait = await this.store.tx(async (r) => {
      const wait = await this.failures.fail(r, ip);
      if (wait === 0) await this.audit.record(r, { actor, actorKind: 'anonymous', action, result: 'failure', details: { ip, reason } });
      return wait;
    });
    if (wait > 0) throw new TooManyRequests('too many failed attempts from this address, try again later', wait);
    throw err;
  }

  async report(robot: RobotPrincipal, rep: Omit<RobotReport, 'reportedAt' | 'lastSeenAt'>): Promise<void> {
    try {
      await this.store.grouped((r) => r.robots.upsertReport(robot.name, rep, this.now().toISOString()));
    } catch (err) {
      // The robot was deleted after its token was checked (on another replica, the check is up to a change-log
      // poll old): the write's own foreign key says so, and the token is as good as expired.
      if (err instanceof ForeignKeyViolation) throw new Unauthorized('invalid or expired token', 'invalid-token');
      throw err;
    }
  }
}
