import type { Caller } from '../acl/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import { publishCascadedBindings } from '../bindings/bindings.service.js';
import { Conflict, InvalidInput, NotFound } from '../errors.js';
import { generateKeyPair, inspectCertificate, issueCertificate, issueCrl, readCrl, signSmime } from '../pki/index.js';
import { defaultGovernance } from '../policy/governance.js';
import { domainIdProblem, keystoreNameProblem } from '../policy/names.js';
import { validateXml } from '../policy/xsd.js';
import type { Sealer } from '../secrets/seal.js';
import type { Repos, Store } from '../store/store.js';
import { writeTarGz } from './archive.js';
import type { IssuingKeystore } from './issuer.js';
import type { KeystoreMaterial } from './model.js';
import type { EnclaveRow, IdentityMode, KeystoreRow } from './keystores.repo.js';
import type { XmlSandbox } from '../sandbox/sandbox.js';
import { writeSros2Keystore } from './sros2-layout.js';

const DAY_MS = 86_400_000;

export interface CreateKeystoreInput {
  name: string;
  domainId: number;
  validityDays: number;
  splitCa: boolean;
  caName?: string;
  enclaveValidityDays: number;
  backdateSeconds: number;
  identityMode: IdentityMode;
}

export interface CaView {
  certificate: string;
  subject: string;
  fingerprintSha256: string;
  notBefore: string;
  notAfter: string;
}

export interface KeystoreView {
  name: string;
  domainId: number;
  sharedCa: boolean;
  importOnly: boolean;
  origin: 'generated' | 'imported';
  identityCa: CaView;
  permissionsCa: CaView;
  enclaveValidityDays: number;
  backdateSeconds: number;
  /** The identity mode new enclaves get unless they say otherwise. */
  identityMode: IdentityMode;
  revocations: number;
  createdAt: string;
  updatedAt: string;
}

export const caKeyContext = (keystore: string, role: 'identity' | 'permissions') => `ca-key:${keystore}:${role}`;
export const enclaveKeyContext = (keystore: string, path: string) => `enclave-key:${keystore}:${path}`;

function caView(pem: string): CaView {
  const c = inspectCertificate(pem);
  return {
    certificate: pem,
    subject: c.subject,
    fingerprintSha256: c.fingerprintSha256,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
  };
}

export interface ImportLimits {
  maxUnpackedBytes: number;
  maxEntries: number;
  maxFileBytes: number;
}

/** Keystores: creation as sros2 does, import/export in sros2's layout, governance, deletion. */
export class KeystoresService {
  constructor(
    private readonly store: Store,
    private readonly sealer: Sealer,
    private readonly audit: AuditService,
    private readonly importLimits: ImportLimits,
    private readonly now: () => Date,
    /** Reads uploaded governance and keystore archives off the event loop, with a time limit. */
    private readonly sandbox: XmlSandbox,
  ) {}

  /** The keystore's row, when the caller may see it at all (404 otherwise, the same for absent ones). */
  async rowIn(r: Repos, caller: Caller, name: string): Promise<KeystoreRow> {
    caller.requireKeystoreVisible(name);
    const row = await r.keystores.get(name);
    if (!row) throw new NotFound(`no keystore "${name}"`);
    return row;
  }

  /** As `rowIn`, read on its own. */
  row(caller: Caller, name: string): Promise<KeystoreRow> {
    return this.store.read((r) => this.rowIn(r, caller, name));
  }

  async view(r: Repos, row: KeystoreRow): Promise<KeystoreView> {
    return {
      name: row.name,
      domainId: row.domain_id,
      sharedCa: row.shared_ca === 1,
      importOnly: row.identity_ca_key === null || row.permissions_ca_key === null,
      origin: row.origin,
      identityCa: caView(row.identity_ca_cert),
      permissionsCa: caView(row.permissions_ca_cert),
      enclaveValidityDays: row.validity_days,
      backdateSeconds: row.backdate_seconds,
      identityMode: row.identity_mode,
      revocations: await r.keystores.revocationCount(row.name),
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  list(caller: Caller): Promise<KeystoreView[]> {
    const visible = caller.visibleKeystores();
    return this.store.read(async (r) => {
      const out: KeystoreView[] = [];
      for (const row of await r.keystores.list()) if (visible === 'all' || visible.has(row.name)) out.push(await this.view(r, row));
      return out;
    });
  }

  get(caller: Caller, name: string): Promise<KeystoreView> {
    return this.store.read(async (r) => this.view(r, await this.rowIn(r, caller, name)));
  }

  /** The CAs with their clear keys, for one signing operation. Import-only keystores cannot sign. */
  signingKeystore(row: KeystoreRow): IssuingKeystore {
    if (row.identity_ca_key === null || row.permissions_ca_key === null) {
      throw new Conflict(
        `keystore "${row.name}" was imported without its CA private keys: it serves its enclaves but cannot issue or re-sign`,
        'import-only',
      );
    }
    const identityKey = this.sealer.openText(row.identity_ca_key, caKeyContext(row.name, 'identity'));
    const permissionsKey =
      row.shared_ca === 1 ? identityKey : this.sealer.openText(row.permissions_ca_key, caKeyContext(row.name, 'permissions'));
    return {
      identityCa: { certPem: row.identity_ca_cert, keyPem: identityKey },
      permissionsCa: { certPem: row.permissions_ca_cert, keyPem: permissionsKey },
      domainId: row.domain_id,
    };
  }

  async create(caller: Caller, input: CreateKeystoreInput): Promise<KeystoreView> {
    const allowedBy = caller.requireAdmin('keystore:create');
    const nameProblem = keystoreNameProblem(input.name);
    if (nameProblem) throw new InvalidInput(`keystore name ${nameProblem}`, undefined, 'invalid-keystore-name');
    const domainProblem = domainIdProblem(input.domainId);
    if (domainProblem) throw new InvalidInput(`domainId ${domainProblem}`);
    if (await this.store.read((r) => r.keystores.get(input.name))) throw new Conflict(`keystore "${input.name}" already exists`);

    const now = this.now();
    const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - input.backdateSeconds * 1000);
    const notAfter = new Date(notBefore.getTime() + input.backdateSeconds * 1000 + input.validityDays * DAY_MS);
    const base = input.caName ?? 'sros2CA';
    const makeCa = (cn: string) => {
      const key = generateKeyPair();
      const certPem = issueCertificate({ subjectCN: cn, publicKeyPem: key.publicKeyPem, issuer: { keyPem: key.privateKeyPem }, notBefore, notAfter, profile: 'ca' });
      return { certPem, keyPem: key.privateKeyPem };
    };
    // Split CAs get distinct names: chain building in openssl and DDS matches issuers by name first.
    const identityCa = makeCa(input.splitCa ? `${base} identity` : base);
    const permissionsCa = input.splitCa ? makeCa(`${base} permissions`) : identityCa;

    const governanceXml = defaultGovernance(input.domainId);
    await this.requireValid(governanceXml, 'governance');
    const at = now.toISOString();
    const row: KeystoreRow = {
      name: input.name,
      domain_id: input.domainId,
      shared_ca: input.splitCa ? 0 : 1,
      identity_ca_cert: identityCa.certPem,
      identity_ca_key: this.sealer.seal(identityCa.keyPem, caKeyContext(input.name, 'identity')),
      permissions_ca_cert: permissionsCa.certPem,
      permissions_ca_key: this.sealer.seal(permissionsCa.keyPem, caKeyContext(input.name, 'permissions')),
      governance_xml: governanceXml,
      governance_p7s: signSmime(governanceXml, permissionsCa, now),
      crl_pem: null,
      crl_number: 0,
      validity_days: input.enclaveValidityDays,
      backdate_seconds: input.backdateSeconds,
      origin: 'generated',
      identity_mode: input.identityMode,
      crl_pending: 0,
      created_at: at,
      updated_at: at,
    };
    await this.store.tx(async (r) => {
      // Checked again inside the write transaction: another request may have made it while this one awaited.
      if (await r.keystores.get(input.name)) throw new Conflict(`keystore "${input.name}" already exists`);
      await r.keystores.insert(row);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'keystore.create',
        target: input.name,
        grantId: allowedBy,
        details: { domainId: input.domainId, splitCa: input.splitCa, validityDays: input.validityDays, identityMode: input.identityMode },
      });
    });
    return this.get(caller, input.name);
  }

  async setGovernance(caller: Caller, name: string, xml: string): Promise<KeystoreView> {
    const allowedBy = caller.requireAdmin('keystore:governance');
    const row = await this.row(caller, name);
    await this.sandbox.run('governance', { xml });
    await this.requireValid(xml, 'governance');
    const ks = this.signingKeystore(row);
    const now = this.now();
    const p7s = signSmime(xml, ks.permissionsCa, now);
    return this.store.tx(async (r) => {
      // The CAs that signed are the keystore's own: a keystore deleted and made again meanwhile has others.
      const current = await r.keystores.get(name);
      if (!current) throw new NotFound(`no keystore "${name}"`);
      if (current.permissions_ca_cert !== row.permissions_ca_cert) throw new Conflict(`keystore "${name}" changed meanwhile: try again`);
      await r.keystores.setGovernance(name, xml, p7s, now.toISOString());
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'keystore.governance', target: name, grantId: allowedBy });
      await r.publish({ kind: 'keystore', keystore: name });
      return this.view(r, (await r.keystores.get(name))!);
    });
  }

  async delete(caller: Caller, name: string): Promise<void> {
    const allowedBy = caller.requireAdmin('keystore:delete');
    await this.store.tx(async (r) => {
      await this.rowIn(r, caller, name);
      await publishCascadedBindings(r, name);
      if (!(await r.keystores.remove(name))) throw new NotFound(`no keystore "${name}"`);
      await this.audit.record(r, { actor: caller.name, actorKind: 'user', action: 'keystore.delete', target: name, grantId: allowedBy });
      await r.publish({ kind: 'keystore', keystore: name });
    });
  }

  /** Validates every part of an sros2 keystore archive before storing anything; all problems at once. */
  async import(caller: Caller, name: string, archive: Buffer): Promise<KeystoreView & { enclaves: number }> {
    const allowedBy = caller.requireAdmin('keystore:import');
    const nameProblem = keystoreNameProblem(name);
    if (nameProblem) throw new InvalidInput(`keystore name ${nameProblem}`, undefined, 'invalid-keystore-name');
    if (await this.store.read((r) => r.keystores.get(name))) throw new Conflict(`keystore "${name}" already exists`);
    const { material, problems, crlPem } = await this.sandbox.run('keystoreArchive', {
      archive,
      limits: { ...this.importLimits },
      now: this.now().getTime(),
    });
    if (!material || problems.length) {
      throw new InvalidInput(`the keystore archive has ${problems.length} problem(s): ${problems[0] ?? 'unreadable'}`, problems, 'invalid-keystore');
    }
    const governanceProblems = await validateXml(material.governanceXml, 'governance');
    if (governanceProblems.length) {
      throw new InvalidInput(`governance.xml does not validate: ${governanceProblems[0]}`, governanceProblems, 'invalid-keystore');
    }
    // Serials an imported CRL revokes stay revoked in every CRL this server signs later.
    const importedCrl = crlPem ? readCrl(crlPem, material.identityCaCertPem) : undefined;
    const importedRevocations = importedCrl ? [...importedCrl.revokedSerials] : [];
    let crlToStore = crlPem ?? null;
    if (importedCrl && material.identityCaKeyPem) {
      // Re-signed under this server's rule (nextUpdate = the CA's expiry): an imported CRL that expires in a
      // month would otherwise make DDS refuse every enclave of the keystore a month from now.
      crlToStore = issueCrl({
        issuer: { certPem: material.identityCaCertPem, keyPem: material.identityCaKeyPem },
        revoked: importedRevocations.map((serialHex) => ({ serialHex, revokedAt: this.now() })),
        thisUpdate: new Date(this.now().getTime() - 3600_000),
        nextUpdate: inspectCertificate(material.identityCaCertPem).notAfter,
        crlNumber: 1,
      });
    } else if (importedCrl?.nextUpdate && importedCrl.nextUpdate.getTime() < this.now().getTime() + 7 * 86400_000) {
      throw new InvalidInput(
        `public/crl.pem expires ${importedCrl.nextUpdate.toISOString()} and this import has no identity CA key to re-sign it: DDS would refuse every enclave once it expires`,
        undefined,
        'invalid-keystore',
      );
    }
    const at = this.now().toISOString();
    const perRobot = material.perRobotEnclaves ?? [];
    const row: KeystoreRow = {
      name,
      domain_id: material.domainId,
      shared_ca: material.sharedCa ? 1 : 0,
      identity_ca_cert: material.identityCaCertPem,
      identity_ca_key: material.identityCaKeyPem ? this.sealer.seal(material.identityCaKeyPem, caKeyContext(name, 'identity')) : null,
      permissions_ca_cert: material.permissionsCaCertPem,
      permissions_ca_key: material.permissionsCaKeyPem
        ? this.sealer.seal(material.permissionsCaKeyPem, caKeyContext(name, 'permissions'))
        : null,
      governance_xml: material.governanceXml,
      governance_p7s: material.governanceP7s,
      crl_pem: crlToStore,
      crl_number: crlPem ? 1 : 0,
      validity_days: 365,
      backdate_seconds: 3600,
      origin: 'imported',
      // sros2's layout has no keystore-wide mode: an archive of per-robot enclaves only (as this server
      // exports one) is a per-robot keystore; anything with a shared enclave stays sros2's default.
      identity_mode: perRobot.length > 0 && material.enclaves.length === 0 ? 'per-robot' : 'shared',
      crl_pending: 0,
      created_at: at,
      updated_at: at,
    };
    // Shared enclaves bring their key and certificate; per-robot ones only their permissions and window.
    const identities = [
      ...material.enclaves.map((e) => {
        const c = inspectCertificate(e.certPem);
        return {
          e,
          cert_pem: e.certPem,
          key_sealed: this.sealer.seal(e.keyPem, enclaveKeyContext(name, e.path)),
          serial: c.serialHex,
          not_before: c.notBefore.toISOString(),
          not_after: c.notAfter.toISOString(),
          identity_mode: 'shared' as const,
        };
      }),
      ...perRobot.map((e) => ({
        e,
        cert_pem: '',
        key_sealed: '',
        serial: '',
        not_before: e.notBefore!.toISOString(),
        not_after: e.notAfter!.toISOString(),
        identity_mode: 'per-robot' as const,
      })),
    ];
    const enclaves: EnclaveRow[] = identities.map(({ e, ...identity }) => ({
      keystore: name,
      path: e.path,
      ...identity,
      policy_xml: null,
      permissions_source: 'imported',
      default_scope: null,
      permissions_xml: e.permissionsXml,
      permissions_p7s: e.permissionsP7s,
      status: 'active',
      created_at: at,
      updated_at: at,
    }));
    await this.store.tx(async (r) => {
      if (await r.keystores.get(name)) throw new Conflict(`keystore "${name}" already exists`);
      await r.keystores.insert(row);
      for (const serial of importedRevocations) await r.keystores.addRevocation(name, serial, '(imported CRL)', at, null);
      for (const enclave of enclaves) await r.keystores.insertEnclave(enclave);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'keystore.import',
        target: name,
        grantId: allowedBy,
        details: { enclaves: material.enclaves.length, perRobotEnclaves: perRobot.length, importOnly: !material.identityCaKeyPem, sharedCa: material.sharedCa },
      });
    });
    return { ...(await this.get(caller, name)), enclaves: material.enclaves.length + perRobot.length };
  }

  /** A `.tar.gz` in sros2's layout; CA private keys only on request, and only for admins. */
  async export(caller: Caller, name: string, includeCaKeys: boolean): Promise<Buffer> {
    const allowedBy = caller.requireAdmin('keystore:export');
    const { row, all } = await this.store.read(async (r) => {
      const row = await this.rowIn(r, caller, name);
      return { row, all: await r.keystores.allEnclaves(name) };
    });
    const active = all.filter((e) => e.status === 'active');
    const material: KeystoreMaterial = {
      identityCaCertPem: row.identity_ca_cert,
      permissionsCaCertPem: row.permissions_ca_cert,
      sharedCa: row.shared_ca === 1,
      governanceXml: row.governance_xml,
      governanceP7s: row.governance_p7s,
      domainId: row.domain_id,
      enclaves: active
        .filter((e) => e.identity_mode === 'shared')
        .map((e) => ({
          path: e.path,
          certPem: e.cert_pem,
          keyPem: this.sealer.openText(e.key_sealed, enclaveKeyContext(name, e.path)),
          permissionsXml: e.permissions_xml,
          permissionsP7s: e.permissions_p7s,
        })),
      // Robots' keys never left the robots: a per-robot enclave is its permissions, with no key or certificate.
      perRobotEnclaves: active
        .filter((e) => e.identity_mode === 'per-robot')
        .map((e) => ({ path: e.path, permissionsXml: e.permissions_xml, permissionsP7s: e.permissions_p7s })),
    };
    if (includeCaKeys) {
      if (row.identity_ca_key) material.identityCaKeyPem = this.sealer.openText(row.identity_ca_key, caKeyContext(name, 'identity'));
      if (row.permissions_ca_key) {
        material.permissionsCaKeyPem = this.sealer.openText(row.permissions_ca_key, caKeyContext(name, 'permissions'));
      }
    }
    const archive = await writeTarGz(writeSros2Keystore(material, { includeCaKeys }, { crlPem: row.crl_pem ?? undefined }));
    await this.audit.recordAlone({
      actor: caller.name,
      actorKind: 'user',
      action: 'keystore.export',
      target: name,
      grantId: allowedBy,
      details: { enclaves: material.enclaves.length, perRobotEnclaves: material.perRobotEnclaves?.length ?? 0, caKeys: includeCaKeys },
    });
    return archive;
  }

  private async requireValid(xml: string, schema: 'governance' | 'permissions'): Promise<void> {
    const problems = await validateXml(xml, schema);
    if (problems.length) throw new InvalidInput(`${schema} XML does not validate: ${problems[0]}`, problems, `invalid-${schema}`);
  }
}
