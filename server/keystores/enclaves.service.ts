import type { Caller } from '../acl/caller.js';
import { envelopeAsTopics } from '../acl/envelope.js';
import type { AuditService } from '../audit/audit.service.js';
import { publishCascadedBindings } from '../bindings/bindings.service.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import { inspectCertificate } from '../pki/index.js';
import { allowedTopics, topicPermissions } from '../policy/allowed-topics.js';
import { enclaveNameProblem } from '../policy/names.js';
import { validateXml } from '../policy/xsd.js';
import type { XmlSandbox } from '../sandbox/sandbox.js';
import type { Sealer } from '../secrets/seal.js';
import type { Repos, Store } from '../store/store.js';
import { enclaveValidity, issueEnclave, permissionsFor, signPermissions, withValidity, type IssuedEnclave, type Validity } from './issuer.js';
import type { KeystoreCrls, Revoked } from './crl.js';
import type { EnclaveRow, EnclaveSummaryRow, IdentityMode, KeystoreRow } from './keystores.repo.js';
import { enclaveKeyContext, type KeystoresService } from './keystores.service.js';

export const MAX_BATCH = 5000;
const ISSUE_CHUNK = 100;
export const MAX_VALIDITY_DAYS = 3650 * 3;

export interface EnclaveSummary {
  keystore: string;
  path: string;
  status: 'active' | 'revoked';
  serial: string;
  notBefore: string;
  notAfter: string;
  /** `envelope`: no policy, made by a member: their grant's permissions envelope (empty: deny all). */
  permissionsSource: 'default' | 'policy' | 'imported' | 'envelope';
  /** `per-robot`: no shared key or certificate (`serial` is ''); each bound robot requests its own. */
  identityMode: IdentityMode;
  createdAt: string;
  updatedAt: string;
}

export interface EnclaveView extends EnclaveSummary {
  /** The shared certificate; absent for a per-robot enclave (each robot has its own). */
  certificate?: string;
  subject: string;
  fingerprintSha256?: string;
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
  permissionsSource: r.default_scope === 'envelope' ? 'envelope' : r.permissions_source,
  identityMode: r.identity_mode,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export interface CreateOptions {
  policyXml?: string;
  validityDays?: number;
  /** Absent: the keystore's mode. */
  identityMode?: IdentityMode;
}

/** What one enclave will be signed with, and what allowed the caller to sign it. */
interface PermissionsPlan {
  xml: string;
  source: EnclaveRow['permissions_source'];
  scope: EnclaveRow['default_scope'];
  allowedBy: string;
}

const revokedHint = (keystore: string, path: string) =>
  `enclave ${keystore}:${path} is revoked: rotate it (enclavectl enclave rotate ${keystore} ${path}) to issue a fresh one under the same path`;

/**
 * Enclave lifecycle. Every operation is decided by the caller's ACL, audited with what allowed it, and
 * published on the change feed so bundles follow. What a member signs stays inside their grant's permissions
 * envelope: checked on creation, policy change and rotation, on the permissions actually signed.
 */
export class EnclavesService {
  constructor(
    private readonly store: Store,
    private readonly sealer: Sealer,
    private readonly keystores: KeystoresService,
    private readonly audit: AuditService,
    private readonly now: () => Date,
    /** Turns policies into permissions off the event loop (a large policy takes a while to read). */
    private readonly sandbox: XmlSandbox,
    private readonly crls: KeystoreCrls,
  ) {}

  private async enclave(r: Repos, keystore: string, path: string): Promise<EnclaveRow> {
    const row = await r.keystores.getEnclave(keystore, path);
    if (!row) throw new NotFound(`no enclave ${keystore}:${path}`);
    return row;
  }

  /** The keystore (as the caller may see it) and the enclave the caller may manage, read together. */
  private async target(r: Repos, caller: Caller, keystore: string, path: string): Promise<{ ks: KeystoreRow; row: EnclaveRow }> {
    const ks = await this.keystores.rowIn(r, caller, keystore);
    caller.require({ capability: 'manage', keystore, enclave: path });
    return { ks, row: await this.enclave(r, keystore, path) };
  }

  list(caller: Caller, keystore: string): Promise<EnclaveSummary[]> {
    return this.store.read(async (r) => {
      await this.keystores.rowIn(r, caller, keystore);
      const readable = caller.readable(keystore);
      return (await r.keystores.listEnclaves(keystore)).filter((e) => readable(e.path)).map(summary);
    });
  }

  get(caller: Caller, keystore: string, path: string): Promise<EnclaveView> {
    return this.store.read(async (r) => {
      await this.keystores.rowIn(r, caller, keystore);
      caller.require({ capability: 'read', keystore, enclave: path });
      return this.view(await this.enclave(r, keystore, path));
    });
  }

  private view(r: EnclaveRow): EnclaveView {
    const details = { permissionsXml: r.permissions_xml, policyXml: r.policy_xml };
    // Every robot's certificate of a per-robot enclave carries exactly this subject (inspectCertificate's form).
    if (r.identity_mode === 'per-robot') return { ...summary(r), subject: `CN=${r.path}`, ...details };
    const c = inspectCertificate(r.cert_pem);
    return { ...summary(r), certificate: r.cert_pem, subject: c.subject, fingerprintSha256: c.fingerprintSha256, ...details };
  }

  async create(caller: Caller, keystore: string, path: string, opts: CreateOptions): Promise<EnclaveSummary | EnclaveView> {
    await this.createMany(caller, keystore, [path], opts, 'enclave.create');
    return this.viewFor(caller, keystore, path);
  }

  /** The full view (certificate, permissions, policy) only for callers who may `read`; `manage` alone gets the summary. */
  private viewFor(caller: Caller, keystore: string, path: string): Promise<EnclaveSummary | EnclaveView> {
    return this.store.read(async (r) => {
      const row = await this.enclave(r, keystore, path);
      return caller.can('read', keystore, path) ? this.view(row) : summary(row);
    });
  }

  /**
   * The permissions an enclave gets and the decision that lets the caller sign them. An admin signs what the
   * policy says, or sros2's allow-all default. A member signs a policy only inside their grant's envelope;
   * without a policy they get the envelope itself, and without an envelope nothing but discovery: a member's
   * enclave is never silently allow-all. `fromPolicy`: the permissions the enclave's policy gives it.
   */
  private plan(caller: Caller, ks: KeystoreRow, path: string, fromPolicy: string | undefined, v: Validity): PermissionsPlan {
    const keystore = ks.name;
    if (fromPolicy !== undefined) {
      const xml = fromPolicy;
      const allowedBy = caller.require({ capability: 'manage', keystore, enclave: path, permissions: caller.isAdmin ? undefined : allowedTopics(xml) });
      return { xml, source: 'policy', scope: null, allowedBy };
    }
    const allowedBy = caller.require({ capability: 'manage', keystore, enclave: path });
    if (caller.isAdmin) return { xml: permissionsFor({ domainId: ks.domain_id }, path, null, v), source: 'default', scope: null, allowedBy };
    const envelope = caller.grant(allowedBy.slice('grant:'.length))?.permissionsEnvelope;
    const topics = { publish: envelopeAsTopics(envelope?.publish ?? []), subscribe: envelopeAsTopics(envelope?.subscribe ?? []) };
    return { xml: topicPermissions(path, topics, { ...v, domainId: ks.domain_id }), source: 'default', scope: 'envelope', allowedBy };
  }

  /** All or nothing, in one transaction: names, rights and conflicts are checked before any key is made. */
  async createMany(
    caller: Caller,
    keystore: string,
    paths: string[],
    opts: CreateOptions,
    action = 'enclave.batch-create',
  ): Promise<EnclaveSummary[]> {
    const ks = await this.keystores.row(caller, keystore);
    if (paths.length === 0) throw new InvalidInput('paths: at least one enclave path is needed');
    if (paths.length > MAX_BATCH) throw new InvalidInput(`paths: at most ${MAX_BATCH} enclaves per request`);
    const unique = new Set(paths);
    if (unique.size !== paths.length) throw new InvalidInput('paths: the same enclave is listed twice');
    const problems = paths.flatMap((p) => {
      const problem = p === '/' ? 'must not be the root "/"' : enclaveNameProblem(p);
      return problem ? [`${JSON.stringify(p)}: enclave name ${problem}`] : [];
    });
    if (problems.length) throw new InvalidInput(problems[0]!, problems, 'invalid-enclave-name');
    for (const enclave of paths) caller.require({ capability: 'manage', keystore, enclave });
    const policyXml = opts.policyXml ?? null;
    const now = this.now();
    const validity = enclaveValidity(now, this.validityDays(ks, opts.validityDays), ks.backdate_seconds, inspectCertificate(ks.identity_ca_cert).notAfter);
    const fromPolicy = policyXml === null ? undefined : await this.policyPermissions(ks, policyXml, paths, validity);
    const existing = await this.store.read((r) => r.keystores.enclavesByPath(keystore, paths));
    if (existing.length) throw this.exists(keystore, existing);
    const mode = opts.identityMode ?? ks.identity_mode;

    const signer = this.keystores.signingKeystore(ks);
    // Issuing is CPU-bound (about 0.5 ms an enclave): yield between chunks so a batch of thousands does not
    // hold up long polls and other requests for seconds.
    const issued: (readonly [string, IssuedEnclave, PermissionsPlan])[] = [];
    for (const [i, p] of paths.entries()) {
      if (i > 0 && i % ISSUE_CHUNK === 0) await new Promise((resolve) => setImmediate(resolve));
      const plan = this.plan(caller, ks, p, fromPolicy?.[i], validity);
      issued.push([p, mode === 'per-robot' ? permissionsOnly(signer, plan.xml, validity, now) : issueEnclave(signer, p, plan.xml, validity, now), plan]);
    }
    const at = now.toISOString();
    const rows: EnclaveRow[] = issued.map(([path, e, plan]) => ({
      keystore,
      path,
      ...this.identityColumns(keystore, path, e),
      policy_xml: policyXml,
      permissions_source: plan.source,
      default_scope: plan.scope,
      status: 'active',
      identity_mode: mode,
      created_at: at,
      updated_at: at,
    }));
    await this.store.tx(async (r) => {
      // Checked again inside the write transaction: another request may have acted while this one yielded.
      // The keystore must still be the one that signed (not deleted and made again with other CAs).
      const current = await r.keystores.get(keystore);
      if (!current) throw new NotFound(`no keystore "${keystore}"`);
      if (current.identity_ca_cert !== ks.identity_ca_cert) throw new Conflict(`keystore "${keystore}" changed meanwhile: try again`);
      const raced = await r.keystores.enclavesByPath(keystore, paths);
      if (raced.length) throw this.exists(keystore, raced);
      for (const [i, [path, e, plan]] of issued.entries()) {
        await r.keystores.insertEnclave(rows[i]!);
        await this.audit.record(r, {
          actor: caller.name,
          actorKind: 'user',
          action,
          target: `${keystore}:${path}`,
          grantId: plan.allowedBy,
          details: { serial: e.serial, notAfter: e.notAfter.toISOString(), policy: policyXml === null ? (plan.scope ?? 'default') : 'custom', identityMode: mode },
        });
      }
    });
    // What was inserted is what a read would return.
    return rows.map(summary);
  }

  private exists(keystore: string, rows: EnclaveRow[]): Conflict {
    const first = rows[0]!;
    const more = rows.length > 1 ? ` (and ${rows.length - 1} more)` : '';
    return first.status === 'revoked'
      ? new Conflict(`${revokedHint(keystore, first.path)}${more}`, 'enclave-revoked')
      : new Conflict(`enclave ${keystore}:${first.path} already exists${more}`);
  }

  async setPolicy(caller: Caller, keystore: string, path: string, policyXml: string): Promise<EnclaveSummary | EnclaveView> {
    const { ks, row } = await this.store.read((r) => this.target(r, caller, keystore, path));
    this.requireActive(row);
    const validity = { notBefore: new Date(row.not_before), notAfter: new Date(row.not_after) };
    const [fromPolicy] = await this.policyPermissions(ks, policyXml, [path], validity);
    const signer = this.keystores.signingKeystore(ks);
    const plan = this.plan(caller, ks, path, fromPolicy, validity);
    const permissionsXml = plan.xml;
    const now = this.now();
    const permissionsP7s = signPermissions(signer, permissionsXml, now);
    await this.store.tx(async (r) => {
      // The permissions were made for this validity, signed by this CA: checked again after the sandbox's wait.
      this.requireUnchanged(await r.keystores.getEnclave(keystore, path), row, 'its policy was being set');
      await r.keystores.replacePermissions({
        keystore,
        path,
        policy_xml: policyXml,
        permissions_source: 'policy',
        default_scope: null,
        permissions_xml: permissionsXml,
        permissions_p7s: permissionsP7s,
        updated_at: now.toISOString(),
      });
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'enclave.policy', target: `${keystore}:${path}`, grantId: plan.allowedBy });
      await r.publish({ kind: 'enclave', keystore, enclave: path });
    });
    return this.viewFor(caller, keystore, path);
  }

  /**
   * New key and certificate. With `revokePrevious` (a suspected key leak) the old certificate's serial also
   * joins the CRL; otherwise it stays valid until it expires, so robots can switch over without a gap. A
   * revoked enclave is re-issued: a fresh identity under the same path (its old serial stays revoked).
   * The permissions keep every rule (regenerated from the policy, or the stored ones with new dates: a
   * default must never be widened on rotation), and a member may rotate only what their envelope covers.
   */
  async rotate(caller: Caller, keystore: string, path: string, validityDays?: number, revokePrevious = false): Promise<EnclaveSummary | EnclaveView> {
    const { ks, row } = await this.store.read((r) => this.target(r, caller, keystore, path));
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    const validity = enclaveValidity(now, this.validityDays(ks, validityDays), ks.backdate_seconds, inspectCertificate(ks.identity_ca_cert).notAfter);
    const permissionsXml =
      row.permissions_source === 'policy' && row.policy_xml !== null
        ? (await this.policyPermissions(ks, row.policy_xml, [path], validity, false))[0]!
        : withValidity(row.permissions_xml, validity);
    const allowedBy = caller.require({ capability: 'manage', keystore, enclave: path, permissions: caller.isAdmin ? undefined : allowedTopics(permissionsXml) });
    const perRobot = row.identity_mode === 'per-robot';
    const issued = perRobot ? permissionsOnly(signer, permissionsXml, validity, now) : issueEnclave(signer, path, permissionsXml, validity, now);
    const reissued = row.status === 'revoked';
    const revoke = revokePrevious && !reissued;
    const columns = this.identityColumns(keystore, path, issued);
    await this.store.tx(async (r) => {
      this.requireUnchanged(await r.keystores.getEnclave(keystore, path), row, 'it was being rotated');
      await r.keystores.replaceIdentity({ keystore, path, ...columns, identity_mode: row.identity_mode, updated_at: now.toISOString() });
      // Per-robot: robots keep their certificates (issued for the old window) until they expire, unless a
      // leak is suspected: then every robot's serial is revoked and each requests a new one.
      if (revoke) await this.revokeSerials(r, ks, row);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: reissued ? 'enclave.reissue' : 'enclave.rotate',
        target: `${keystore}:${path}`,
        grantId: allowedBy,
        details: { oldSerial: row.serial, serial: issued.serial, notAfter: issued.notAfter.toISOString(), oldRevoked: revoke || reissued },
      });
      await r.publish(revoke ? { kind: 'keystore', keystore } : { kind: 'enclave', keystore, enclave: path });
    });
    return this.viewFor(caller, keystore, path);
  }

  async revoke(caller: Caller, keystore: string, path: string): Promise<EnclaveSummary | EnclaveView> {
    // Nothing to wait for but the database: read, decide and write in one unit of work.
    await this.store.tx(async (r) => {
      const ks = await this.keystores.rowIn(r, caller, keystore);
      const grant = caller.require({ capability: 'manage', keystore, enclave: path });
      const row = await this.enclave(r, keystore, path);
      this.requireActive(row);
      const serials = await this.revokeSerials(r, ks, row);
      await r.keystores.setStatus(keystore, path, 'revoked', this.now().toISOString());
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'enclave.revoke', target: `${keystore}:${path}`, grantId: grant, details: { serials } });
      // The CRL changed for the whole keystore: every bundle holding one of its enclaves changes.
      await r.publish({ kind: 'keystore', keystore });
    });
    return this.viewFor(caller, keystore, path);
  }

  /**
   * Deleting an active enclave also revokes its certificate when the keystore can sign a CRL: a deleted
   * identity must not stay usable by whoever kept a copy.
   */
  async delete(caller: Caller, keystore: string, path: string): Promise<void> {
    await this.store.tx(async (r) => {
      const ks = await this.keystores.rowIn(r, caller, keystore);
      const grant = caller.require({ capability: 'manage', keystore, enclave: path });
      const row = await this.enclave(r, keystore, path);
      let revoked = false;
      let serials: string[] = row.serial ? [row.serial] : [];
      if (row.status === 'active' && ks.identity_ca_key !== null) {
        serials = await this.revokeSerials(r, ks, row);
        revoked = serials.length > 0;
      }
      await publishCascadedBindings(r, keystore, path);
      await r.keystores.removeEnclave(keystore, path);
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'enclave.delete', target: `${keystore}:${path}`, grantId: grant, details: { serials, revoked } });
      await r.publish(revoked ? { kind: 'keystore', keystore } : { kind: 'enclave', keystore, enclave: path });
    });
  }

  /**
   * Inside a write transaction: the enclave's certificates join the CRL (signed once). Shared: its one serial.
   * Per-robot: every robot's certificate that is still good (live or superseded). Returns the serials.
   */
  private async revokeSerials(r: Repos, ks: KeystoreRow, row: EnclaveRow): Promise<string[]> {
    const at = this.now().toISOString();
    const revoked: Revoked[] =
      row.identity_mode === 'shared'
        ? [{ serial: row.serial, enclave: row.path, notAfter: row.not_after }]
        : (await r.identities.unrevokedOfEnclave(ks.name, row.path)).map((i) => ({ serial: i.serial, enclave: row.path, notAfter: i.not_after }));
    if (row.identity_mode === 'per-robot') for (const x of revoked) await r.identities.revoke(ks.name, x.serial, at);
    await this.crls.revokeNow(r, ks, revoked);
    return revoked.map((x) => x.serial);
  }

  /**
   * Switches an enclave between one shared key and a key per robot. shared → per-robot: the shared key is
   * deleted from the server and its serial revoked, so robots holding it get a bundle without it and request
   * their own. per-robot → shared: a new shared key and certificate are issued (same validity and permissions)
   * and every robot's own certificate for the enclave is revoked.
   */
  async setIdentityMode(caller: Caller, keystore: string, path: string, mode: IdentityMode): Promise<EnclaveSummary | EnclaveView> {
    const { ks, row } = await this.store.read((r) => this.target(r, caller, keystore, path));
    const grant = caller.require({ capability: 'manage', keystore, enclave: path });
    this.requireActive(row);
    if (row.identity_mode === mode) return this.viewFor(caller, keystore, path);
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    const validity = { notBefore: new Date(row.not_before), notAfter: new Date(row.not_after) };
    const issued =
      mode === 'shared'
        ? { ...issueEnclave(signer, path, row.permissions_xml, validity, now), permissionsP7s: row.permissions_p7s }
        : { ...permissionsOnly(signer, row.permissions_xml, validity, now), permissionsP7s: row.permissions_p7s };
    const columns = this.identityColumns(keystore, path, issued);
    await this.store.tx(async (r) => {
      this.requireUnchanged(await r.keystores.getEnclave(keystore, path), row, 'its identity mode was being switched');
      const revoked = await this.revokeSerials(r, ks, row);
      await r.keystores.replaceIdentity({ keystore, path, ...columns, identity_mode: mode, updated_at: now.toISOString() });
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'enclave.identity-mode',
        target: `${keystore}:${path}`,
        grantId: grant,
        details: { from: row.identity_mode, identityMode: mode, revoked, serial: issued.serial || null },
      });
      await r.publish({ kind: 'keystore', keystore });
    });
    return this.viewFor(caller, keystore, path);
  }

  private identityColumns(keystore: string, path: string, e: IssuedEnclave) {
    return {
      cert_pem: e.certPem,
      // Per-robot: no key at all (the schema refuses one), not an empty secret sealed.
      key_sealed: e.keyPem === '' ? '' : this.sealer.seal(e.keyPem, enclaveKeyContext(keystore, path)),
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

  /**
   * Inside a unit of work: the enclave is still the one read before the wait (same serial, same last change,
   * so same mode, validity and status), and so is its keystore (a keystore deleted and made again is a new row
   * with a new enclave row too).
   */
  private requireUnchanged(current: EnclaveRow | undefined, before: EnclaveRow, while_: string): void {
    if (!current || current.serial !== before.serial || current.updated_at !== before.updated_at || current.identity_mode !== before.identity_mode) {
      throw new Conflict(`enclave ${before.keystore}:${before.path} changed while ${while_}: try again`);
    }
  }

  private requireActive(row: EnclaveRow): void {
    if (row.status === 'revoked') throw new Conflict(revokedHint(row.keystore, row.path), 'enclave-revoked');
  }

  /**
   * The permissions a policy gives each of `paths` (in order). The policy must validate against sros2's
   * schema and name every enclave it is used for.
   */
  private async policyPermissions(ks: KeystoreRow, policyXml: string, paths: string[], v: Validity, validate = true): Promise<string[]> {
    // A stored policy was validated when it was set: rotation only re-reads it.
    const problems = validate ? await this.sandbox.bounded(validateXml(policyXml, 'policy'), 'the policy') : [];
    if (problems.length) throw new InvalidInput(`policy does not validate: ${problems[0]}`, problems, 'invalid-policy');
    const result = await this.sandbox.run('permissions', { policyXml, paths, ...taskValidity(v, ks) });
    if ('missing' in result) {
      const { missing } = result;
      throw new InvalidInput(
        `the policy has no <enclave path="${missing[0]}">${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}`,
        missing,
        'invalid-policy',
      );
    }
    return result.permissions;
  }
}

/** A per-robot enclave's share of `issueEnclave`: signed permissions, and no key, certificate or serial. */
function permissionsOnly(signer: Parameters<typeof signPermissions>[0], permissionsXml: string, v: Validity, now: Date): IssuedEnclave {
  return { certPem: '', keyPem: '', serial: '', ...v, permissionsXml, permissionsP7s: signPermissions(signer, permissionsXml, now) };
}

function taskValidity(v: Validity, ks: KeystoreRow): { notBefore: number; notAfter: number; domainId: number } {
  return { notBefore: v.notBefore.getTime(), notAfter: v.notAfter.getTime(), domainId: ks.domain_id };
}
