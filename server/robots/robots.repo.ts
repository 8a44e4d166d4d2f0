import type { Labels } from '../acl/acl.js';
import type { Sql } from '../store/sql.js';

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
  clockSkewMs: r.clock_skew_ms === null ? null : Number(r.clock_skew_ms),
  agentVersion: r.agent_version,
  enclaves: r.enclaves ? JSON.parse(r.enclaves) : [],
  reportedAt: r.reported_at,
  lastSeenAt: r.last_seen_at,
});

const ROBOT_COLUMNS = 'name, labels, public_key, key_id, enrolled_at, agent_version, created_at, updated_at';
const REPORT_COLUMNS = 'robot, revision, filesystem, clock_skew_ms, agent_version, enclaves, reported_at, last_seen_at';

export class RobotsRepo {
  constructor(private readonly sql: Sql) {}

  async get(name: string): Promise<Robot | undefined> {
    const r = await this.sql.get<RobotRow>(`SELECT ${ROBOT_COLUMNS} FROM robots WHERE name = ?`, [name]);
    return r && toRobot(r);
  }
  async list(): Promise<Robot[]> {
    return (await this.sql.all<RobotRow>(`SELECT ${ROBOT_COLUMNS} FROM robots ORDER BY name`)).map(toRobot);
  }
  async insert(name: string, labels: Labels, at: string): Promise<boolean> {
    const { changes } = await this.sql.run(
      'INSERT INTO robots (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING',
      [name, JSON.stringify(labels), at, at],
    );
    return changes === 1;
  }
  async setLabels(name: string, labels: Labels, at: string): Promise<void> {
    await this.sql.run('UPDATE robots SET labels = ?, updated_at = ? WHERE name = ?', [JSON.stringify(labels), at, name]);
  }
  async remove(name: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM robots WHERE name = ?', [name])).changes === 1;
  }
  async setKey(name: string, key: { publicKey: string; keyId: string; agentVersion: string | null } | null, at: string): Promise<void> {
    await this.sql.run(
      'UPDATE robots SET public_key = ?, key_id = ?, enrolled_at = ?, agent_version = ?, updated_at = ? WHERE name = ?',
      [key?.publicKey ?? null, key?.keyId ?? null, key ? at : null, key?.agentVersion ?? null, at, name],
    );
  }
  async insertEnrollmentToken(hash: string, robot: string, expiresAt: string, createdBy: string, at: string, reenroll: boolean): Promise<void> {
    await this.sql.run(
      'INSERT INTO enrollment_tokens (token_hash, robot, expires_at, created_by, created_at, reenroll) VALUES (?, ?, ?, ?, ?, ?)',
      [hash, robot, expiresAt, createdBy, at, reenroll ? 1 : 0],
    );
  }
  /** Marks the token used if it is unused and unexpired; returns its robot. One statement: exactly one winner. */
  async burnEnrollmentToken(hash: string, now: string): Promise<{ robot: string; reenroll: boolean } | undefined> {
    const r = await this.sql.get<{ robot: string; reenroll: number }>(
      `UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?
        RETURNING robot, reenroll`,
      [now, hash, now],
    );
    return r && { robot: r.robot, reenroll: Number(r.reenroll) === 1 };
  }
  /** Every token of the robot not used yet becomes unusable (after an enrollment, a key revocation). */
  async burnAllEnrollmentTokens(robot: string, now: string): Promise<number> {
    return (await this.sql.run('UPDATE enrollment_tokens SET used_at = ? WHERE robot = ? AND used_at IS NULL', [now, robot])).changes;
  }
  async outstandingEnrollmentTokens(robot: string, now: string): Promise<EnrollmentTokenInfo[]> {
    const rows = await this.sql.all<{ expires_at: string; reenroll: number; created_by: string; created_at: string }>(
      `SELECT expires_at, reenroll, created_by, created_at FROM enrollment_tokens
        WHERE robot = ? AND used_at IS NULL AND expires_at > ? ORDER BY created_at, token_hash`,
      [robot, now],
    );
    return rows.map((r) => ({
      expiresAt: r.expires_at,
      reenroll: Number(r.reenroll) === 1,
      createdBy: r.created_by,
      createdAt: r.created_at,
    }));
  }
  /** False when the jti was already used (a replay). */
  async recordAssertion(jti: string, robot: string, expiresAt: string): Promise<boolean> {
    const { changes } = await this.sql.run('INSERT INTO used_assertions (jti, robot, expires_at) VALUES (?, ?, ?) ON CONFLICT (jti) DO NOTHING', [
      jti,
      robot,
      expiresAt,
    ]);
    return changes === 1;
  }
  async purgeAssertions(before: string): Promise<void> {
    await this.sql.run('DELETE FROM used_assertions WHERE expires_at < ?', [before]);
  }
  async report(name: string): Promise<RobotReport | undefined> {
    const r = await this.sql.get<ReportRow>(`SELECT ${REPORT_COLUMNS} FROM robot_reports WHERE robot = ?`, [name]);
    return r && toReport(r);
  }
  /** Every robot's last report, in one read (a fleet-wide view would otherwise query once per robot). */
  async reports(): Promise<Map<string, RobotReport>> {
    const rows = await this.sql.all<ReportRow & { robot: string }>(`SELECT ${REPORT_COLUMNS} FROM robot_reports ORDER BY robot`);
    return new Map(rows.map((r) => [r.robot, toReport(r)]));
  }
  async upsertReport(robot: string, rep: Omit<RobotReport, 'reportedAt' | 'lastSeenAt'>, at: string): Promise<void> {
    await this.sql.run(
      `INSERT INTO robot_reports (robot, revision, filesystem, clock_skew_ms, agent_version, enclaves, reported_at, last_seen_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (robot) DO UPDATE SET revision = excluded.revision, filesystem = excluded.filesystem,
        clock_skew_ms = excluded.clock_skew_ms, agent_version = excluded.agent_version, enclaves = excluded.enclaves,
        reported_at = excluded.reported_at, last_seen_at = excluded.last_seen_at`,
      [robot, rep.revision, rep.filesystem, rep.clockSkewMs, rep.agentVersion, JSON.stringify(rep.enclaves), at, at],
    );
  }
}
