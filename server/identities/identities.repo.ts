import type { Sql } from '../store/sql.js';

export type IdentityStatus = 'live' | 'superseded' | 'revoked';

export interface IdentityRow {
  keystore: string;
  serial: string;
  robot: string;
  enclave: string;
  spki_sha256: string;
  cert_pem: string;
  not_before: string;
  not_after: string;
  status: IdentityStatus;
  issued_at: string;
  superseded_at: string | null;
  revoked_at: string | null;
}

/**
 * Newest first. Two issued in the same millisecond: the live one is the newer (issuing supersedes or revokes
 * the previous one in the same transaction), then the serial, so the order never depends on the engine.
 */
const NEWEST_FIRST = `issued_at DESC, CASE WHEN status = 'live' THEN 0 ELSE 1 END, serial DESC`;

/**
 * Sorted here, not by ORDER BY serial: SQLite, without statistics, then walks the primary key (keystore,
 * serial) to spare a sort, i.e. every certificate of the keystore, instead of the few the index on robot
 * finds. With 20,000 identities that one plan took two thirds of a certificate request's time.
 */
const bySerial = (rows: IdentityRow[]): IdentityRow[] => rows.sort((a, b) => (a.serial < b.serial ? -1 : a.serial > b.serial ? 1 : 0));

/** SQL for per-robot identities and the public keys ever seen in a CSR; nothing else. */
export class IdentitiesRepo {
  constructor(private readonly sql: Sql) {}

  get(keystore: string, serial: string): Promise<IdentityRow | undefined> {
    return this.sql.get<IdentityRow>('SELECT * FROM robot_identities WHERE keystore = ? AND serial = ?', [keystore, serial]);
  }
  forRobot(robot: string): Promise<IdentityRow[]> {
    return this.sql.all<IdentityRow>(`SELECT * FROM robot_identities WHERE robot = ? ORDER BY keystore, enclave, ${NEWEST_FIRST}`, [robot]);
  }
  /** The robot's live certificate for that enclave (the latest issued), if any. */
  current(robot: string, keystore: string, enclave: string): Promise<IdentityRow | undefined> {
    // There is at most one live one, but a race-free answer does not rely on it.
    return this.sql.get<IdentityRow>(
      `SELECT * FROM robot_identities WHERE robot = ? AND keystore = ? AND enclave = ? AND status = 'live' ORDER BY ${NEWEST_FIRST} LIMIT 1`,
      [robot, keystore, enclave],
    );
  }
  async liveOf(robot: string, keystore: string, enclave: string): Promise<IdentityRow[]> {
    return bySerial(
      await this.sql.all<IdentityRow>(`SELECT * FROM robot_identities WHERE robot = ? AND keystore = ? AND enclave = ? AND status = 'live'`, [robot, keystore, enclave]),
    );
  }
  /** Live and superseded: every certificate of the robot that is still good until it expires. */
  unrevokedOfRobot(robot: string): Promise<IdentityRow[]> {
    return this.sql.all<IdentityRow>(`SELECT * FROM robot_identities WHERE robot = ? AND status <> 'revoked' ORDER BY keystore, serial`, [robot]);
  }
  async unrevokedOfEnclave(keystore: string, enclave: string): Promise<IdentityRow[]> {
    return bySerial(
      await this.sql.all<IdentityRow>(`SELECT * FROM robot_identities WHERE keystore = ? AND enclave = ? AND status <> 'revoked'`, [keystore, enclave]),
    );
  }
  async insert(row: Omit<IdentityRow, 'status' | 'superseded_at' | 'revoked_at'>): Promise<void> {
    await this.sql.run(
      `INSERT INTO robot_identities (keystore, serial, robot, enclave, spki_sha256, cert_pem, not_before, not_after, status, issued_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'live', ?)`,
      [row.keystore, row.serial, row.robot, row.enclave, row.spki_sha256, row.cert_pem, row.not_before, row.not_after, row.issued_at],
    );
  }
  async supersede(keystore: string, serial: string, at: string): Promise<void> {
    await this.sql.run(`UPDATE robot_identities SET status = 'superseded', superseded_at = ? WHERE keystore = ? AND serial = ? AND status = 'live'`, [at, keystore, serial]);
  }
  async revoke(keystore: string, serial: string, at: string): Promise<boolean> {
    const { changes } = await this.sql.run(
      `UPDATE robot_identities SET status = 'revoked', revoked_at = ? WHERE keystore = ? AND serial = ? AND status <> 'revoked'`,
      [at, keystore, serial],
    );
    return changes === 1;
  }
  /** Records a public key; false when it was seen before (by any robot, for any enclave, ever). */
  async see(spkiSha256: string, at: string): Promise<boolean> {
    const { changes } = await this.sql.run(
      'INSERT INTO identity_keys_seen (spki_sha256, first_seen_at) VALUES (?, ?) ON CONFLICT (spki_sha256) DO NOTHING',
      [spkiSha256, at],
    );
    return changes === 1;
  }
  async seen(spkiSha256: string): Promise<boolean> {
    return (await this.sql.get('SELECT 1 AS one FROM identity_keys_seen WHERE spki_sha256 = ?', [spkiSha256])) !== undefined;
  }
}
