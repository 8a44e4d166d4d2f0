import type { Db } from '../db/database.js';

export interface KeystoreRow {
  name: string;
  domain_id: number;
  shared_ca: number;
  identity_ca_cert: string;
  identity_ca_key: string | null;
  permissions_ca_cert: string;
  permissions_ca_key: string | null;
  governance_xml: string;
  governance_p7s: string;
  crl_pem: string | null;
  crl_number: number;
  validity_days: number;
  backdate_seconds: number;
  origin: 'generated' | 'imported';
  /** The mode new enclaves get when they do not say. */
  identity_mode: IdentityMode;
  /** 1: revocations recorded that `crl_pem` does not list yet (batched, see crl.ts). */
  crl_pending: number;
  created_at: string;
  updated_at: string;
}

/** `shared`: one server-made key per enclave, sent to every bound robot. `per-robot`: each robot's own key. */
export type IdentityMode = 'shared' | 'per-robot';
export const IDENTITY_MODES = ['shared', 'per-robot'] as const;

export interface EnclaveRow {
  keystore: string;
  path: string;
  cert_pem: string;
  key_sealed: string;
  serial: string;
  not_before: string;
  not_after: string;
  policy_xml: string | null;
  permissions_source: 'default' | 'policy' | 'imported';
  /** 'envelope': default permissions made from a member's grant envelope (empty: deny all) instead of allow-all. */
  default_scope: 'envelope' | null;
  permissions_xml: string;
  permissions_p7s: string;
  status: 'active' | 'revoked';
  /** per-robot: `cert_pem`, `key_sealed` and `serial` are '' (each robot holds its own, see robot_identities). */
  identity_mode: IdentityMode;
  created_at: string;
  updated_at: string;
}

export type EnclaveSummaryRow = Pick<
  EnclaveRow,
  'keystore' | 'path' | 'serial' | 'not_before' | 'not_after' | 'status' | 'permissions_source' | 'default_scope' | 'identity_mode' | 'created_at' | 'updated_at'
>;

export interface RevocationRow {
  serial: string;
  enclave: string;
  revoked_at: string;
  not_after: string | null;
}

/** SQL for keystores, enclaves and revocations; nothing else. */
export class KeystoresRepo {
  private readonly stmts;
  constructor(private readonly db: Db) {
    this.stmts = {
      get: db.prepare('SELECT * FROM keystores WHERE name = ?'),
      list: db.prepare('SELECT * FROM keystores ORDER BY name'),
      insert: db.prepare(`INSERT INTO keystores (name, domain_id, shared_ca, identity_ca_cert, identity_ca_key,
        permissions_ca_cert, permissions_ca_key, governance_xml, governance_p7s, crl_pem, crl_number, validity_days,
        backdate_seconds, origin, identity_mode, crl_pending, created_at, updated_at)
        VALUES (@name, @domain_id, @shared_ca, @identity_ca_cert, @identity_ca_key, @permissions_ca_cert,
        @permissions_ca_key, @governance_xml, @governance_p7s, @crl_pem, @crl_number, @validity_days,
        @backdate_seconds, @origin, @identity_mode, @crl_pending, @created_at, @updated_at)`),
      remove: db.prepare('DELETE FROM keystores WHERE name = ?'),
      setGovernance: db.prepare('UPDATE keystores SET governance_xml = ?, governance_p7s = ?, updated_at = ? WHERE name = ?'),
      setCrl: db.prepare('UPDATE keystores SET crl_pem = ?, crl_number = ?, crl_pending = 0, updated_at = ? WHERE name = ?'),
      setCrlPending: db.prepare('UPDATE keystores SET crl_pending = 1 WHERE name = ?'),
      pendingCrls: db.prepare('SELECT name FROM keystores WHERE crl_pending = 1 ORDER BY name'),
      getEnclave: db.prepare('SELECT * FROM enclaves WHERE keystore = ? AND path = ?'),
      listEnclaves: db.prepare(`SELECT keystore, path, serial, not_before, not_after, status, permissions_source,
        default_scope, identity_mode, created_at, updated_at FROM enclaves WHERE keystore = ? ORDER BY path`),
      allEnclaves: db.prepare('SELECT * FROM enclaves WHERE keystore = ? ORDER BY path'),
      insertEnclave: db.prepare(`INSERT INTO enclaves (keystore, path, cert_pem, key_sealed, serial, not_before, not_after,
        policy_xml, permissions_source, default_scope, permissions_xml, permissions_p7s, status, identity_mode, created_at, updated_at)
        VALUES (@keystore, @path, @cert_pem, @key_sealed, @serial, @not_before, @not_after, @policy_xml,
        @permissions_source, @default_scope, @permissions_xml, @permissions_p7s, @status, @identity_mode, @created_at, @updated_at)`),
      replaceIdentity: db.prepare(`UPDATE enclaves SET cert_pem = @cert_pem, key_sealed = @key_sealed, serial = @serial,
        not_before = @not_before, not_after = @not_after, permissions_xml = @permissions_xml,
        permissions_p7s = @permissions_p7s, status = 'active', identity_mode = @identity_mode, updated_at = @updated_at
        WHERE keystore = @keystore AND path = @path`),
      replacePermissions: db.prepare(`UPDATE enclaves SET policy_xml = @policy_xml,
        permissions_source = @permissions_source, default_scope = @default_scope, permissions_xml = @permissions_xml,
        permissions_p7s = @permissions_p7s, updated_at = @updated_at WHERE keystore = @keystore AND path = @path`),
      setStatus: db.prepare('UPDATE enclaves SET status = ?, updated_at = ? WHERE keystore = ? AND path = ?'),
      removeEnclave: db.prepare('DELETE FROM enclaves WHERE keystore = ? AND path = ?'),
      insertRevocation: db.prepare('INSERT OR IGNORE INTO revocations (keystore, serial, enclave, revoked_at, not_after) VALUES (?, ?, ?, ?, ?)'),
      revocations: db.prepare('SELECT serial, enclave, revoked_at, not_after FROM revocations WHERE keystore = ? ORDER BY revoked_at, serial'),
    };
  }

  get(name: string): KeystoreRow | undefined {
    return this.stmts.get.get(name) as KeystoreRow | undefined;
  }
  list(): KeystoreRow[] {
    return this.stmts.list.all() as KeystoreRow[];
  }
  insert(row: KeystoreRow): void {
    this.stmts.insert.run(row);
  }
  remove(name: string): boolean {
    return this.stmts.remove.run(name).changes === 1;
  }
  setGovernance(name: string, xml: string, p7s: string, at: string): void {
    this.stmts.setGovernance.run(xml, p7s, at, name);
  }
  /** Also clears `crl_pending`: the CRL signed now lists every recorded revocation. */
  setCrl(name: string, crl: string, number: number, at: string): void {
    this.stmts.setCrl.run(crl, number, at, name);
  }
  setCrlPending(name: string): void {
    this.stmts.setCrlPending.run(name);
  }
  pendingCrls(): string[] {
    return (this.stmts.pendingCrls.all() as { name: string }[]).map((r) => r.name);
  }

  getEnclave(keystore: string, path: string): EnclaveRow | undefined {
    return this.stmts.getEnclave.get(keystore, path) as EnclaveRow | undefined;
  }
  listEnclaves(keystore: string): EnclaveSummaryRow[] {
    return this.stmts.listEnclaves.all(keystore) as EnclaveSummaryRow[];
  }
  allEnclaves(keystore: string): EnclaveRow[] {
    return this.stmts.allEnclaves.all(keystore) as EnclaveRow[];
  }
  /** Several enclaves by key, in one statement. */
  enclavesByPath(keystore: string, paths: string[]): EnclaveRow[] {
    if (paths.length === 0) return [];
    return this.db
      .prepare(`SELECT * FROM enclaves WHERE keystore = ? AND path IN (SELECT value FROM json_each(?))`)
      .all(keystore, JSON.stringify(paths)) as EnclaveRow[];
  }
  insertEnclave(row: EnclaveRow): void {
    this.stmts.insertEnclave.run(row);
  }
  /**
   * New key and certificate (or, per-robot, none: '' and a new validity); a revoked enclave becomes active again
   * (its old serial stays in the CRL).
   */
  replaceIdentity(row: Pick<EnclaveRow, 'keystore' | 'path' | 'cert_pem' | 'key_sealed' | 'serial' | 'not_before' | 'not_after' | 'permissions_xml' | 'permissions_p7s' | 'identity_mode' | 'updated_at'>): void {
    this.stmts.replaceIdentity.run(row);
  }
  replacePermissions(row: Pick<EnclaveRow, 'keystore' | 'path' | 'policy_xml' | 'permissions_source' | 'default_scope' | 'permissions_xml' | 'permissions_p7s' | 'updated_at'>): void {
    this.stmts.replacePermissions.run(row);
  }
  setStatus(keystore: string, path: string, status: EnclaveRow['status'], at: string): void {
    this.stmts.setStatus.run(status, at, keystore, path);
  }
  removeEnclave(keystore: string, path: string): boolean {
    return this.stmts.removeEnclave.run(keystore, path).changes === 1;
  }
  /** `notAfter`: when the revoked certificate expires (null: unknown, e.g. a serial from an imported CRL). */
  addRevocation(keystore: string, serial: string, enclave: string, at: string, notAfter: string | null): void {
    this.stmts.insertRevocation.run(keystore, serial, enclave, at, notAfter);
  }
  revocations(keystore: string): RevocationRow[] {
    return this.stmts.revocations.all(keystore) as RevocationRow[];
  }
}
