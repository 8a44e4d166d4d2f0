import type { Access } from '../acl/access.js';
import type { AuditService } from '../audit/audit.service.js';
import type { UserPrincipal } from '../auth/principal.js';
import type { Db } from '../db/database.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import type { ChangeFeed } from '../events/changes.js';
import { inspectCertificate, issueCrl } from '../pki/index.js';
import { enclaveNameProblem } from '../policy/names.js';
import { policyEnclavePaths } from '../policy/permissions.js';
import { validateXml } from '../policy/xsd.js';
import type { Sealer } from '../secrets/seal.js';
import { enclaveValidity, issueEnclave, permissionsFor, signPermissions, withValidity, type IssuedEnclave } from './issuer.js';
import type { EnclaveRow, EnclaveSummaryRow, KeystoreRow } from './keystores.repo.js';
import { enclaveKeyContext, type KeystoresService } from './keystores.service.js';

export const MAX_BATCH = 5000;
const ISSUE_CHUNK = 100;
const MAX_VALIDITY_DAYS = 3650 * 3;

export interface EnclaveSummary {
  keystore: string;
  path: string;
  status: 'active' | 'revoked';
  serial: string;
  notBefore: string;
  notAfter: string;
  permissionsSource: 'default' | 'policy' | 'imported';
  createdAt: string;
  updatedAt: string;
}

export interface EnclaveView extends EnclaveSummary {
  certificate: string;
  subject: string;
  fingerprintSha256: string;
  permissionsXml: string;
  policyXml: string | null;
}

const summary = (r: EnclaveSummaryRow): EnclaveSummary => ({
  keystore: r.keystore,
  path: r.path,
  status: r.status,
  serial: r.serial,
  notBefore: r.not_before,
  notAfter: r.not_after,
  permissionsSource: r.permissions_source,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export interface CreateOptions {
  policyXml?: string;
  validityDays?: number;
}

/**
 * Enclave lifecycle. Every operation is decided by the ACL (`Access`), audited with what allowed it,
 * and published on the change feed so bundles follow.
 */
export class EnclavesService {
  constructor(
    private readonly db: Db,
    private readonly sealer: Sealer,
    private readonly access: Access,
    private readonly keystores: KeystoresService,
    private readonly audit: AuditService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
  ) {}

  private get repo() {
    return this.keystores.repo;
  }

  private keystore(user: UserPrincipal, name: string): KeystoreRow {
    return this.keystores.row(user, name);
  }

  private enclave(keystore: string, path: string): EnclaveRow {
    const row = this.repo.getEnclave(keystore, path);
    if (!row) throw new NotFound(`no enclave ${keystore}:${path}`);
    return row;
  }

  /**
   * The rights check alone, for handlers to run before they parse an expensive body (a policy archive):
   * a caller who may not manage these enclaves never gets the server to do that work.
   */
  requireManage(user: UserPrincipal, keystore: string, paths: readonly string[]): void {
    this.keystore(user, keystore);
    if (user.role === 'admin') return;
    for (const enclave of paths) this.access.require(user, { capability: 'manage', keystore, enclave });
  }

  list(user: UserPrincipal, keystore: string): EnclaveSummary[] {
    this.keystore(user, keystore);
    const readable = this.access.readable(user, keystore);
    return this.repo
      .listEnclaves(keystore)
      .filter((r) => readable(r.path))
      .map(summary);
  }

  get(user: UserPrincipal, keystore: string, path: string): EnclaveView {
    this.keystore(user, keystore);
    this.access.require(user, { capability: 'read', keystore, enclave: path });
    return this.view(this.enclave(keystore, path));
  }

  private view(r: EnclaveRow): EnclaveView {
    const c = inspectCertificate(r.cert_pem);
    return {
      ...summary(r),
      certificate: r.cert_pem,
      subject: c.subject,
      fingerprintSha256: c.fingerprintSha256,
      permissionsXml: r.permissions_xml,
      policyXml: r.policy_xml,
    };
  }

  async create(user: UserPrincipal, keystore: string, path: string, opts: CreateOptions): Promise<EnclaveSummary | EnclaveView> {
    await this.createMany(user, keystore, [path], opts, 'enclave.create');
    return this.viewFor(user, keystore, path);
  }

  /** The full view (certificate, permissions, policy) only for callers who may `read`; `manage` alone gets the summary. */
  private viewFor(user: UserPrincipal, keystore: string, path: string): EnclaveSummary | EnclaveView {
    const row = this.enclave(keystore, path);
    return this.access.can(user, 'read', keystore, path) ? this.view(row) : summary(row);
  }

  /** All or nothing, in one transaction: names, rights and conflicts are checked before any key is made. */
  async createMany(
    user: UserPrincipal,
    keystore: string,
    paths: string[],
    opts: CreateOptions,
    action = 'enclave.batch-create',
  ): Promise<EnclaveSummary[]> {
    const ks = this.keystore(user, keystore);
    if (paths.length === 0) throw new InvalidInput('paths: at least one enclave path is needed');
    if (paths.length > MAX_BATCH) throw new InvalidInput(`paths: at most ${MAX_BATCH} enclaves per request`);
    const unique = new Set(paths);
    if (unique.size !== paths.length) throw new InvalidInput('paths: the same enclave is listed twice');
    const problems = paths.flatMap((p) => {
      const problem = p === '/' ? 'must not be the root "/"' : enclaveNameProblem(p);
      return problem ? [`${JSON.stringify(p)}: enclave name ${problem}`] : [];
    });
    if (problems.length) throw new InvalidInput(problems[0]!, problems, 'invalid-enclave-name');
    const allowedBy = new Map(paths.map((p) => [p, this.access.require(user, { capability: 'manage', keystore, enclave: p })]));
    const policyXml = opts.policyXml ?? null;
    if (policyXml !== null) await this.checkPolicy(policyXml, paths);
    const existing = this.repo.enclavesByPath(keystore, paths);
    if (existing.length) {
      throw new Conflict(`enclave ${keystore}:${existing[0]!.path} already exists${existing.length > 1 ? ` (and ${existing.length - 1} more)` : ''}`);
    }

    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    const validity = enclaveValidity(now, this.validityDays(ks, opts.validityDays), ks.backdate_seconds, inspectCertificate(ks.identity_ca_cert).notAfter);
    // Issuing is CPU-bound (about 0.5 ms an enclave): yield between chunks so a batch of thousands does not
    // hold up long polls and other requests for seconds.
    const issued: (readonly [string, IssuedEnclave])[] = [];
    for (const [i, p] of paths.entries()) {
      if (i > 0 && i % ISSUE_CHUNK === 0) await new Promise((resolve) => setImmediate(resolve));
      issued.push([p, issueEnclave(signer, p, policyXml, validity, now)]);
    }
    const at = now.toISOString();
    this.db.transaction(() => {
      // Checked again inside the write transaction: another request may have acted while this one yielded.
      if (!this.repo.get(keystore)) throw new NotFound(`no keystore "${keystore}"`);
      const raced = this.repo.enclavesByPath(keystore, paths);
      if (raced.length) throw new Conflict(`enclave ${keystore}:${raced[0]!.path} already exists`);
      for (const [path, e] of issued) {
        this.repo.insertEnclave({
          keystore,
          path,
          ...this.identityColumns(keystore, path, e),
          policy_xml: policyXml,
          permissions_source: policyXml === null ? 'default' : 'policy',
          status: 'active',
          created_at: at,
          updated_at: at,
        });
        this.audit.record({
          actor: user.name,
          actorKind: 'user',
          action,
          target: `${keystore}:${path}`,
          grantId: allowedBy.get(path),
          details: { serial: e.serial, notAfter: e.notAfter.toISOString(), policy: policyXml === null ? 'default' : 'custom' },
        });
      }
    }).immediate();
    return paths.map((p) => summary(this.repo.getEnclave(keystore, p)!));
  }

  async setPolicy(user: UserPrincipal, keystore: string, path: string, policyXml: string): Promise<EnclaveSummary | EnclaveView> {
    const ks = this.keystore(user, keystore);
    const grant = this.access.require(user, { capability: 'manage', keystore, enclave: path });
    const row = this.enclave(keystore, path);
    this.requireActive(row);
    await this.checkPolicy(policyXml, [path]);
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    const permissionsXml = permissionsFor(signer, path, policyXml, { notBefore: new Date(row.not_before), notAfter: new Date(row.not_after) });
    this.repo.replacePermissions({
      keystore,
      path,
      policy_xml: policyXml,
      permissions_source: 'policy',
      permissions_xml: permissionsXml,
      permissions_p7s: signPermissions(signer, permissionsXml, now),
      updated_at: now.toISOString(),
    });
    this.audit.record({ actor: user.name, actorKind: 'user', action: 'enclave.policy', target: `${keystore}:${path}`, grantId: grant });
    this.changes.publish({ kind: 'enclave', keystore, enclave: path });
    return this.viewFor(user, keystore, path);
  }

  /**
   * New key and certificate. With `revokePrevious` (a suspected key leak) the old certificate's serial also
   * joins the CRL; otherwise it stays valid until it expires, so robots can switch over without a gap.
   */
  rotate(user: UserPrincipal, keystore: string, path: string, validityDays?: number, revokePrevious = false): EnclaveSummary | EnclaveView {
    const ks = this.keystore(user, keystore);
    const grant = this.access.require(user, { capability: 'manage', keystore, enclave: path });
    const row = this.enclave(keystore, path);
    this.requireActive(row);
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    const validity = enclaveValidity(now, this.validityDays(ks, validityDays), ks.backdate_seconds, inspectCertificate(ks.identity_ca_cert).notAfter);
    let issued: IssuedEnclave;
    if (row.permissions_source === 'imported') {
      issued = issueEnclave(signer, path, null, validity, now);
      issued.permissionsXml = withValidity(row.permissions_xml, validity);
      issued.permissionsP7s = signPermissions(signer, issued.permissionsXml, now);
    } else {
      issued = issueEnclave(signer, path, row.policy_xml, validity, now);
    }
    this.db.transaction(() => {
      this.repo.replaceIdentity({ keystore, path, ...this.identityColumns(keystore, path, issued), updated_at: now.toISOString() });
      if (revokePrevious) this.revokeSerial(ks, row);
      this.audit.record({
        actor: user.name,
        actorKind: 'user',
        action: 'enclave.rotate',
        target: `${keystore}:${path}`,
        grantId: grant,
        details: { oldSerial: row.serial, serial: issued.serial, notAfter: issued.notAfter.toISOString(), oldRevoked: revokePrevious },
      });
    }).immediate();
    this.changes.publish(revokePrevious ? { kind: 'keystore', keystore } : { kind: 'enclave', keystore, enclave: path });
    return this.viewFor(user, keystore, path);
  }

  revoke(user: UserPrincipal, keystore: string, path: string): EnclaveSummary | EnclaveView {
    const ks = this.keystore(user, keystore);
    const grant = this.access.require(user, { capability: 'manage', keystore, enclave: path });
    const row = this.enclave(keystore, path);
    this.requireActive(row);
    this.db.transaction(() => {
      this.revokeSerial(ks, row);
      this.repo.setStatus(keystore, path, 'revoked', this.now().toISOString());
      this.audit.record({ actor: user.name, actorKind: 'user', action: 'enclave.revoke', target: `${keystore}:${path}`, grantId: grant, details: { serial: row.serial } });
    }).immediate();
    // The CRL changed for the whole keystore: every bundle holding one of its enclaves changes.
    this.changes.publish({ kind: 'keystore', keystore });
    return this.viewFor(user, keystore, path);
  }

  /**
   * Deleting an active enclave also revokes its certificate when the keystore can sign a CRL: a deleted
   * identity must not stay usable by whoever kept a copy.
   */
  delete(user: UserPrincipal, keystore: string, path: string): void {
    const ks = this.keystore(user, keystore);
    const grant = this.access.require(user, { capability: 'manage', keystore, enclave: path });
    const row = this.enclave(keystore, path);
    let revoked = false;
    this.db.transaction(() => {
      if (row.status === 'active' && ks.identity_ca_key !== null) {
        this.revokeSerial(ks, row);
        revoked = true;
      }
      this.repo.removeEnclave(keystore, path);
      this.audit.record({ actor: user.name, actorKind: 'user', action: 'enclave.delete', target: `${keystore}:${path}`, grantId: grant, details: { serial: row.serial, revoked } });
    }).immediate();
    this.changes.publish(revoked ? { kind: 'keystore', keystore } : { kind: 'enclave', keystore, enclave: path });
  }

  private revokeSerial(ks: KeystoreRow, row: EnclaveRow): void {
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    this.repo.addRevocation(ks.name, row.serial, row.path, now.toISOString());
    const revoked = this.repo.revocations(ks.name).map((r) => ({ serialHex: r.serial, revokedAt: new Date(r.revoked_at) }));
    // nextUpdate = the CA's end of life: openssl (and so DDS) rejects every certificate once a CRL is past
    // its nextUpdate, which would turn a missed re-sign into a fleet-wide outage.
    const crl = issueCrl({
      issuer: signer.identityCa,
      revoked,
      thisUpdate: new Date(now.getTime() - ks.backdate_seconds * 1000),
      nextUpdate: inspectCertificate(ks.identity_ca_cert).notAfter,
      crlNumber: ks.crl_number + 1,
    });
    this.repo.setCrl(ks.name, crl, ks.crl_number + 1, now.toISOString());
  }

  private identityColumns(keystore: string, path: string, e: IssuedEnclave) {
    return {
      cert_pem: e.certPem,
      key_sealed: this.sealer.seal(e.keyPem, enclaveKeyContext(keystore, path)),
      serial: e.serial,
      not_before: e.notBefore.toISOString(),
      not_after: e.notAfter.toISOString(),
      permissions_xml: e.permissionsXml,
      permissions_p7s: e.permissionsP7s,
    };
  }

  private validityDays(ks: KeystoreRow, requested: number | undefined): number {
    const days = requested ?? ks.validity_days;
    if (!Number.isInteger(days) || days < 1 || days > MAX_VALIDITY_DAYS) {
      throw new InvalidInput(`validityDays must be an integer from 1 to ${MAX_VALIDITY_DAYS}`);
    }
    return days;
  }

  private requireActive(row: EnclaveRow): void {
    if (row.status === 'revoked') throw new Conflict(`enclave ${row.keystore}:${row.path} is revoked`, 'enclave-revoked');
  }

  /** The policy must validate against sros2's schema and name every enclave it is used for. */
  private async checkPolicy(policyXml: string, paths: string[]): Promise<void> {
    const problems = await validateXml(policyXml, 'policy');
    if (problems.length) throw new InvalidInput(`policy does not validate: ${problems[0]}`, problems, 'invalid-policy');
    const inPolicy = new Set(policyEnclavePaths(policyXml));
    const missing = paths.filter((p) => !inPolicy.has(p));
    if (missing.length) {
      throw new InvalidInput(
        `the policy has no <enclave path="${missing[0]}">${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}`,
        missing,
        'invalid-policy',
      );
    }
  }
}
