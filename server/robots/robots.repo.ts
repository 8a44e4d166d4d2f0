import type { Db } from '../db/database.js';
import type { Labels } from '../acl/acl.js';

interface RobotRow {
  name: string;
  labels: string;
  public_key: string | null;
  key_id: string | null;
  enrolled_at: string | null;
  agent_version: string | null;
  created_at: string;
  updated_at: string;
}

export interface Robot {
  name: string;
  labels: Labels;
  publicKey: string | null;
  keyId: string | null;
  enrolledAt: string | null;
  agentVersion: string | null;
  createdAt: string;
  updatedAt: string;
}

/** An unused enrollment token, as shown to administrators (never the token). */
export interface EnrollmentTokenInfo {
  expiresAt: string;
  reenroll: boolean;
  createdBy: string;
  createdAt: string;
}

export interface RobotReport {
  revision: string | null;
  filesystem: string | null;
  clockSkewMs: number | null;
  agentVersion: string | null;
  enclaves: { keystore: string; path: string; notAfter: string }[];
  reportedAt: string;
  lastSeenAt: string;
}

const toRobot = (r: RobotRow): Robot => ({
  name: r.name,
  labels: JSON.parse(r.labels) as Labels,
  publicKey: r.public_key,
  keyId: r.key_id,
  enrolledAt: r.enrolled_at,
  agentVersion: r.agent_version,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

interface ReportRow {
  revision: string | null;
  filesystem: string | null;
  clock_skew_ms: number | null;
  agent_version: string | null;
  enclaves: string | null;
  reported_at: string;
  last_seen_at: string;
}

const toReport = (r: ReportRow): RobotReport => ({
  revision: r.revision,
  filesystem: r.filesystem,
  clockSkewMs: r.clock_skew_ms,
  agentVersion: r.agent_version,
  enclaves: r.enclaves ? JSON.parse(r.enclaves) : [],
  reportedAt: r.reported_at,
  lastSeenAt: r.last_seen_at,
});

export class RobotsRepo {
  private readonly stmts;
  constructor(private readonly db: Db) {
    this.stmts = {
      get: db.prepare('SELECT * FROM robots WHERE name = ?'),
      list: db.prepare('SELECT * FROM robots ORDER BY name'),
      insert: db.prepare(`INSERT INTO robots (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?)
        ON CONFLICT (name) DO NOTHING`),
      setLabels: db.prepare('UPDATE robots SET labels = ?, updated_at = ? WHERE name = ?'),
      remove: db.prepare('DELETE FROM robots WHERE name = ?'),
      setKey: db.prepare(`UPDATE robots SET public_key = ?, key_id = ?, enrolled_at = ?, agent_version = ?, updated_at = ?
        WHERE name = ?`),
      insertToken: db.prepare(`INSERT INTO enrollment_tokens (token_hash, robot, expires_at, created_by, created_at, reenroll)
        VALUES (?, ?, ?, ?, ?, ?)`),
      burnToken: db.prepare(`UPDATE enrollment_tokens SET used_at = @now
        WHERE token_hash = @hash AND used_at IS NULL AND expires_at > @now RETURNING robot, reenroll`),
      burnAll: db.prepare('UPDATE enrollment_tokens SET used_at = ? WHERE robot = ? AND used_at IS NULL'),
      outstanding: db.prepare(`SELECT expires_at, reenroll, created_by, created_at FROM enrollment_tokens
        WHERE robot = ? AND used_at IS NULL AND expires_at > ? ORDER BY created_at`),
      insertJti: db.prepare('INSERT INTO used_assertions (jti, robot, expires_at) VALUES (?, ?, ?) ON CONFLICT (jti) DO NOTHING'),
      purgeJti: db.prepare('DELETE FROM used_assertions WHERE expires_at < ?'),
      report: db.prepare('SELECT * FROM robot_reports WHERE robot = ?'),
      reports: db.prepare('SELECT * FROM robot_reports'),
      upsertReport: db.prepare(`INSERT INTO robot_reports (robot, revision, filesystem, clock_skew_ms, agent_version, enclaves,
        reported_at, last_seen_at) VALUES (@robot, @revision, @filesystem, @clock_skew_ms, @agent_version, @enclaves, @at, @at)
        ON CONFLICT (robot) DO UPDATE SET revision = excluded.revision, filesystem = excluded.filesystem,
        clock_skew_ms = excluded.clock_skew_ms, agent_version = excluded.agent_version, enclaves = excluded.enclaves,
        reported_at = excluded.reported_at, last_seen_at = excluded.last_seen_at`),
    };
  }

  get(name: string): Robot | undefined {
    const r = this.stmts.get.get(name) as RobotRow | undefined;
    return r && toRobot(r);
  }
  list(): Robot[] {
    return (this.stmts.list.all() as RobotRow[]).map(toRobot);
  }
  insert(name: string, labels: Labels, at: string): boolean {
    return this.stmts.insert.run(name, JSON.stringify(labels), at, at).changes === 1;
  }
  setLabels(name: string, labels: Labels, at: string): void {
    this.stmts.setLabels.run(JSON.stringify(labels), at, name);
  }
  remove(name: string): boolean {
    return this.stmts.remove.run(name).changes === 1;
  }
  setKey(name: string, key: { publicKey: string; keyId: string; agentVersion: string | null } | null, at: string): void {
    this.stmts.setKey.run(key?.publicKey ?? null, key?.keyId ?? null, key ? at : null, key?.agentVersion ?? null, at, name);
  }
  insertEnrollmentToken(hash: string, robot: string, expiresAt: string, createdBy: string, at: string, reenroll: boolean): void {
    this.stmts.insertToken.run(hash, robot, expiresAt, createdBy, at, reenroll ? 1 : 0);
  }
  /** Marks the token used if it is unused and unexpired; returns its robot. One statement: exactly one winner. */
  burnEnrollmentToken(hash: string, now: string): { robot: string; reenroll: boolean } | undefined {
    const r = this.stmts.burnToken.get({ hash, now }) as { robot: string; reenroll: number } | undefined;
    return r && { robot: r.robot, reenroll: r.reenroll === 1 };
  }
  /** Every token of the robot not used yet becomes unusable (after an enrollment, a key revocation). */
  burnAllEnrollmentTokens(robot: string, now: string): number {
    return this.stmts.burnAll.run(now, robot).changes;
  }
  outstandingEnrollmentTokens(robot: string, now: string): EnrollmentTokenInfo[] {
    return (this.stmts.outstanding.all(robot, now) as { expires_at: string; reenroll: number; created_by: string; created_at: string }[]).map((r) => ({
      expiresAt: r.expires_at,
      reenroll: r.reenroll === 1,
      createdBy: r.created_by,
      createdAt: r.created_at,
    }));
  }
  /** False when the jti was already used (a replay). */
  recordAssertion(jti: string, robot: string, expiresAt: string): boolean {
    return this.stmts.insertJti.run(jti, robot, expiresAt).changes === 1;
  }
  purgeAssertions(before: string): void {
    this.stmts.purgeJti.run(before);
  }
  report(name: string): RobotReport | undefined {
    const r = this.stmts.report.get(name) as ReportRow | undefined;
    return r && toReport(r);
  }
  /** Every robot's last report, in one read (a fleet-wide view would otherwise query once per robot). */
  reports(): Map<string, RobotReport> {
    return new Map((this.stmts.reports.all() as (ReportRow & { robot: string })[]).map((r) => [r.robot, toReport(r)]));
  }
  upsertReport(robot: string, rep: Omit<RobotReport, 'reportedAt' | 'lastSeenAt'>, at: string): void {
    this.stmts.upsertReport.run({
      robot,
      revision: rep.revision,
      filesystem: rep.filesystem,
      clock_skew_ms: rep.clockSkewMs,
      agent_version: rep.agentVersion,
      enclaves: JSON.stringify(rep.enclaves),
      at,
    });
  }
}
