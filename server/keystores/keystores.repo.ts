import type { Sql } from '../store/sql.js';

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

const KEYSTORE_COLUMNS = [
  'name', 'domain_id', 'shared_ca', 'identity_ca_cert', 'identity_ca_key', 'permissions_ca_cert', 'permissions_ca_key',
  'governance_xml', 'governance_p7s', 'crl_pem', 'crl_number', 'validity_days', 'backdate_seconds', 'origin',
  'identity_mode', 'crl_pending', 'created_at', 'updated_at',
] as const satisfies readonly (keyof KeystoreRow)[];
const ENCLAVE_COLUMNS = [
  'keystore', 'path', 'cert_pem', 'key_sealed', 'serial', 'not_before', 'not_after', 'policy_xml', 'permissions_source',
  'default_scope', 'permissions_xml', 'permissions_p7s', 'status', 'identity_mode', 'created_at', 'updated_at',
] as const satisfies readonly (keyof EnclaveRow)[];
const placeholders = (n: number) => Array.from({ length: n }, () => '?').join(', ');

const INSERT_KEYSTORE = `INSERT INTO keystores (${KEYSTORE_COLUMNS.join(', ')}) VALUES (${placeholders(KEYSTORE_COLUMNS.length)})`;
const INSERT_ENCLAVE = `INSERT INTO enclaves (${ENCLAVE_COLUMNS.join(', ')}) VALUES (${placeholders(ENCLAVE_COLUMNS.length)})`;

/**
 * Paths looked up per statement by `enclavesByPath`. Always this many placeholders (the last chunk repeats a
 * path): one SQL text, so one cached statement, whatever the batch size.
 */
const PATH_CHUNK = 200;
const ENCLAVES_BY_PATH = `SELECT * FROM enclaves WHERE keystore = ? AND path IN (${placeholders(PATH_CHUNK)}) ORDER BY path`;

/** SQL for keystores, enclaves and revocations; nothing else. */
export class KeystoresRepo {
  constructor(private readonly sql: Sql) {}

  get(name: string): Promise<KeystoreRow | undefined> {
    return this.sql.get<KeystoreRow>('SELECT * FROM keystores WHERE name = ?', [name]);
  }
  list(): Promise<KeystoreRow[]> {
    return this.sql.all<KeystoreRow>('SELECT * FROM keystores ORDER BY name');
  }
  async insert(row: KeystoreRow): Promise<void> {
    await this.sql.run(INSERT_KEYSTORE, KEYSTORE_COLUMNS.map((c) => row[c]));
  }
  async remove(name: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM keystores WHERE name = ?', [name])).changes === 1;
  }
  async setGovernance(name: string, xml: string, p7s: string, at: string): Promise<void> {
    await this.sql.run('UPDATE keystores SET governance_xml = ?, governance_p7s = ?, updated_at = ? WHERE name = ?', [xml, p7s, at, name]);
  }
  /** Also clears `crl_pending`: the CRL signed now lists every recorded revocation. */
  async setCrl(name: string, crl: string, number: number, at: string): Promise<void> {
    await this.sql.run('UPDATE keystores SET crl_pem = ?, crl_number = ?, crl_pending = 0, updated_at = ? WHERE name = ?', [crl, number, at, name]);
  }
  async setCrlPending(name: string): Promise<void> {
    await this.sql.run('UPDATE keystores SET crl_pending = 1 WHERE name = ?', [name]);
  }
  async pendingCrls(): Promise<string[]> {
    return (await this.sql.all<{ name: string }>('SELECT name FROM keystores WHERE crl_pending = 1 ORDER BY name')).map((r) => r.name);
  }

  getEnclave(keystore: string, path: string): Promise<EnclaveRow | undefined> {
    return this.sql.get<EnclaveRow>('SELECT * FROM enclaves WHERE keystore = ? AND path = ?', [keystore, path]);
  }
  listEnclaves(keystore: string): Promise<EnclaveSummaryRow[]> {
    return this.sql.all<EnclaveSummaryRow>(
      `SELECT keystore, path, serial, not_before, not_after, status, permissions_source, default_scope, identity_mode,
        created_at, updated_at FROM enclaves WHERE keystore = ? ORDER BY path`,
      [keystore],
    );
  }
  allEnclaves(keystore: string): Promise<EnclaveRow[]> {
    return this.sql.all<EnclaveRow>('SELECT * FROM enclaves WHERE keystore = ? ORDER BY path', [keystore]);
  }
  /** Several enclaves by key, a chunk of paths per statement (ordered by path). */
  async enclavesByPath(keystore: string, paths: string[]): Promise<EnclaveRow[]> {
    const out: EnclaveRow[] = [];
    for (let i = 0; i < paths.length; i += PATH_CHUNK) {
      const chunk = paths.slice(i, i + PATH_CHUNK);
      const padded = [...chunk, ...Array.from({ length: PATH_CHUNK - chunk.length }, () => chunk[0]!)];
      out.push(...(await this.sql.all<EnclaveRow>(ENCLAVES_BY_PATH, [keystore, ...padded])));
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }
  async insertEnclave(row: EnclaveRow): Promise<void> {
    await this.sql.run(INSERT_ENCLAVE, ENCLAVE_COLUMNS.map((c) => row[c]));
  }
  /**
   * New key and certificate (or, per-robot, none: '' and a new validity); a revoked enclave becomes active again
   * (its old serial stays in the CRL).
   */
  async replaceIdentity(row: Pick<EnclaveRow, 'keystore' | 'path' | 'cert_pem' | 'key_sealed' | 'serial' | 'not_before' | 'not_after' | 'permissions_xml' | 'permissions_p7s' | 'identity_mode' | 'updated_at'>): Promise<void> {
    await this.sql.run(
      `UPDATE enclaves SET cert_pem = ?, key_sealed = ?, serial = ?, not_before = ?, not_after = ?, permissions_xml = ?,
        permissions_p7s = ?, status = 'active', identity_mode = ?, updated_at = ? WHERE keystore = ? AND path = ?`,
      [row.cert_pem, row.key_sealed, row.serial, row.not_before, row.not_after, row.permissions_xml, row.permissions_p7s, row.identity_mode, row.updated_at, row.keystore, row.path],
    );
  }
  async replacePermissions(row: Pick<EnclaveRow, 'keystore' | 'path' | 'policy_xml' | 'permissions_source' | 'default_scope' | 'permissions_xml' | 'permissions_p7s' | 'updated_at'>): Promise<void> {
    await this.sql.run(
      `UPDATE enclaves SET policy_xml = ?, permissions_source = ?, default_scope = ?, permissions_xml = ?, permissions_p7s = ?,
        updated_at = ? WHERE keystore = ? AND path = ?`,
      [row.policy_xml, row.permissions_source, row.default_scope, row.permissions_xml, row.permissions_p7s, row.updated_at, row.keystore, row.path],
    );
  }
  async setStatus(keystore: string, path: string, status: EnclaveRow['status'], at: string): Promise<void> {
    await this.sql.run('UPDATE enclaves SET status = ?, updated_at = ? WHERE keystore = ? AND path = ?', [status, at, keystore, path]);
  }
  async removeEnclave(keystore: string, path: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM enclaves WHERE keystore = ? AND path = ?', [keystore, path])).changes === 1;
  }
  /** `notAfter`: when the revoked certificate expires (null: unknown, e.g. a serial from an imported CRL). */
  async addRevocation(keystore: string, serial: string, enclave: string, at: string, notAfter: string | null): Promise<void> {
    await this.sql.run(
      'INSERT INTO revocations (keystore, serial, enclave, revoked_at, not_after) VALUES (?, ?, ?, ?, ?) ON CONFLICT (keystore, serial) DO NOTHING',
      [keystore, serial, enclave, at, notAfter],
    );
  }
  revocations(keystore: string): Promise<RevocationRow[]> {
    return this.sql.all<RevocationRow>('SELECT serial, enclave, revoked_at, not_after FROM revocations WHERE keystore = ? ORDER BY revoked_at, serial', [keystore]);
  }
  /** How many serials the keystore's CRL lists (or will, once a pending batch is signed). */
  async revocationCount(keystore: string): Promise<number> {
    const row = await this.sql.get<{ n: number | string }>('SELECT count(*) AS n FROM revocations WHERE keystore = ?', [keystore]);
    return Number(row?.n ?? 0);
  }
}
