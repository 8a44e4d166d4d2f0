import type { Db } from '../db/database.js';

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

/** SQL for per-robot identities and the public keys ever seen in a CSR; nothing else. */
export class IdentitiesRepo {
  private readonly stmts;
  constructor(db: Db) {
    this.stmts = {
      get: db.prepare('SELECT * FROM robot_identities WHERE keystore = ? AND serial = ?'),
      forRobot: db.prepare('SELECT * FROM robot_identities WHERE robot = ? ORDER BY keystore, enclave, issued_at DESC, rowid DESC'),
      // The newest live one: there is at most one, but a race-free answer does not rely on it.
      current: db.prepare(`SELECT * FROM robot_identities WHERE robot = ? AND keystore = ? AND enclave = ? AND status = 'live'
        ORDER BY issued_at DESC, rowid DESC LIMIT 1`),
      liveOf: db.prepare(`SELECT * FROM robot_identities WHERE robot = ? AND keystore = ? AND enclave = ? AND status = 'live'`),
      unrevokedOfRobot: db.prepare(`SELECT * FROM robot_identities WHERE robot = ? AND status <> 'revoked' ORDER BY keystore, serial`),
      unrevokedOfEnclave: db.prepare(`SELECT * FROM robot_identities WHERE keystore = ? AND enclave = ? AND status <> 'revoked' ORDER BY serial`),
      insert: db.prepare(`INSERT INTO robot_identities (keystore, serial, robot, enclave, spki_sha256, cert_pem, not_before, not_after,
        status, issued_at) VALUES (@keystore, @serial, @robot, @enclave, @spki_sha256, @cert_pem, @not_before, @not_after, 'live', @issued_at)`),
      supersede: db.prepare(`UPDATE robot_identities SET status = 'superseded', superseded_at = ? WHERE keystore = ? AND serial = ? AND status = 'live'`),
      revoke: db.prepare(`UPDATE robot_identities SET status = 'revoked', revoked_at = ? WHERE keystore = ? AND serial = ? AND status <> 'revoked'`),
      seeKey: db.prepare('INSERT INTO identity_keys_seen (spki_sha256, first_seen_at) VALUES (?, ?) ON CONFLICT (spki_sha256) DO NOTHING'),
      seen: db.prepare('SELECT 1 FROM identity_keys_seen WHERE spki_sha256 = ?'),
    };
  }

  get(keystore: string, serial: string): IdentityRow | undefined {
    return this.stmts.get.get(keystore, serial) as IdentityRow | undefined;
  }
  forRobot(robot: string): IdentityRow[] {
    return this.stmts.forRobot.all(robot) as IdentityRow[];
  }
  /** The robot's live certificate for that enclave (the latest issued), if any. */
  current(robot: string, keystore: string, enclave: string): IdentityRow | undefined {
    return this.stmts.current.get(robot, keystore, enclave) as IdentityRow | undefined;
  }
  liveOf(robot: string, keystore: string, enclave: string): IdentityRow[] {
    return this.stmts.liveOf.all(robot, keystore, enclave) as IdentityRow[];
  }
  /** Live and superseded: every certificate of the robot that is still good until it expires. */
  unrevokedOfRobot(robot: string): IdentityRow[] {
    return this.stmts.unrevokedOfRobot.all(robot) as IdentityRow[];
  }
  unrevokedOfEnclave(keystore: string, enclave: string): IdentityRow[] {
    return this.stmts.unrevokedOfEnclave.all(keystore, enclave) as IdentityRow[];
  }
  insert(row: Omit<IdentityRow, 'status' | 'superseded_at' | 'revoked_at'>): void {
    this.stmts.insert.run(row);
  }
  supersede(keystore: string, serial: string, at: string): void {
    this.stmts.supersede.run(at, keystore, serial);
  }
  revoke(keystore: string, serial: string, at: string): boolean {
    return this.stmts.revoke.run(at, keystore, serial).changes === 1;
  }
  /** Records a public key; false when it was seen before (by any robot, for any enclave, ever). */
  see(spkiSha256: string, at: string): boolean {
    return this.stmts.seeKey.run(spkiSha256, at).changes === 1;
  }
  seen(spkiSha256: string): boolean {
    return this.stmts.seen.get(spkiSha256) !== undefined;
  }
}
