import type { Caller } from '../acl/caller.js';
import type { AuditService } from '../audit/audit.service.js';
import type { RobotPrincipal } from '../auth/principal.js';
import type { BindingsService } from '../bindings/bindings.service.js';
import { Conflict, NotFound, TooManyRequests } from '../errors.js';
import type { KeystoreCrls, Revoked } from '../keystores/crl.js';
import type { EnclaveRow, KeystoreRow } from '../keystores/keystores.repo.js';
import type { KeystoresService } from '../keystores/keystores.service.js';
import { issueCertificate, randomSerial, readCsr, toPem } from '../pki/index.js';
import type { Repos, Store } from '../store/store.js';
import type { IdentityRow } from './identities.repo.js';

/** What happens to a robot's previous certificate for an enclave when it gets a new one. */
export type ReissuePolicy = 'revoke' | 'expire';

export interface IdentityOptions {
  /** `revoke` (default): the previous serial joins the CRL. `expire`: it is only superseded, left to expire. */
  reissue: ReissuePolicy;
  /** Issuances one robot may get for one enclave in a burst... */
  burst: number;
  /** ...and per hour, on average. */
  perHour: number;
  /**
   * Lifetime of a robot's certificate in days; 0: the enclave's. Short lifetimes keep the CRL small (a serial
   * leaves it a week after its certificate expired) and bound how long a key taken from a running robot stays
   * good; agents renew at two thirds of the lifetime, which restarts the processes using the enclave.
   */
  validityDays: number;
}

export const DEFAULT_IDENTITY_OPTIONS: IdentityOptions = { reissue: 'revoke', burst: 3, perHour: 10, validityDays: 0 };

export interface IssueInput {
  keystore: string;
  enclave: string;
  csr: string;
}

export interface IssuedIdentity {
  keystore: string;
  enclave: string;
  serial: string;
  notAfter: string;
  certificate: string;
  /** The robot's bundle revision once this certificate is in it. */
  revision: string;
  /** With short-lived robot certificates (`--identity-validity-days`): when the agent asks for the next one. */
  renewAfter?: string;
}

export interface IdentityView {
  keystore: string;
  enclave: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  status: 'live' | 'superseded' | 'revoked' | 'expired';
  issuedAt: string;
  revokedAt?: string;
}

/** Serials as the bundle's `identitySerial` and the API show them: lower-case hex, no colons. */
export const serialOut = (serial: string) => serial.toLowerCase();
/** Serials as stored (inspectCertificate's form): upper-case hex. */
const serialIn = (serial: string) => serial.replace(/:/g, '').toUpperCase();

const SERIAL_BYTES = 16;
const HOUR_MS = 3_600_000;

interface Bucket {
  tokens: number;
  at: number;
}

/** The limiter row of one robot and enclave (in `throttles`, shared with the login limits). */
const bucketKey = (robot: string, keystore: string, enclave: string) => JSON.stringify(['identity', robot, keystore, enclave]);
/** Limiter rows past their end mean nothing (ThrottleRepo.get skips them); every this many charges they are deleted. */
const SWEEP_EVERY = 1024;

/**
 * Per-robot enclave identities: a robot proves it holds a fresh P-256 key (a PKCS#10 signed by it) and gets a
 * certificate for the enclave's subject, signed by the keystore's identity CA, with a serial of its own. The
 * server never sees the key. Revoking one robot's certificate puts that serial alone on the CRL: every other
 * robot keeps its certificate, byte for byte.
 */
export class IdentitiesService {
  /**
   * Token buckets per robot and enclave are in the database (`throttles`): a robot in a restart loop gets one
   * budget whichever replica it reaches. Checked before the work (a refused request costs nothing), charged
   * and checked again in the unit of work that records the certificate, so requests at once cannot all pass.
   */
  private charges = 0;

  constructor(
    private readonly store: Store,
    private readonly keystores: KeystoresService,
    private readonly crls: KeystoreCrls,
    private readonly bindings: BindingsService,
    private readonly audit: AuditService,
    private readonly now: () => Date,
    /** The robot's bundle revision now (the bundle service's). */
    private readonly revisionOf: (robot: string) => string | Promise<string>,
    private readonly opts: IdentityOptions = DEFAULT_IDENTITY_OPTIONS,
  ) {}

  /**
   * The enclave the robot may request an identity for: bound to it by the same rule as its bundle
   * (`enclavesFor`), active, per-robot. Anything else is 404, so a robot learns nothing about enclaves not
   * bound to it.
   */
  private async target(r: Repos, robot: string, keystore: string, enclave: string): Promise<{ ks: KeystoreRow; row: EnclaveRow }> {
    const missing = () => new NotFound(`no enclave ${keystore}:${enclave} bound to this robot`);
    const record = await r.robots.get(robot);
    if (!record) throw missing();
    if (!(await this.bindings.enclavesFor(r, robot, record.labels)).some((t) => t.keystore === keystore && t.enclave === enclave)) throw missing();
    const ks = await r.keystores.get(keystore);
    const row = ks && (await r.keystores.getEnclave(keystore, enclave));
    if (!ks || !row || row.status !== 'active') throw missing();
    if (row.identity_mode !== 'per-robot') {
      throw new Conflict(`enclave ${keystore}:${enclave} has one shared identity (in the bundle): it takes no certificate requests`, 'identity-mode-shared');
    }
    return { ks, row };
  }

  /** The enclave's validity, or a window of `validityDays` from now inside it. */
  private validity(ks: KeystoreRow, row: EnclaveRow, nowMs: number): { notBefore: Date; notAfter: Date } {
    const enclave = { notBefore: new Date(row.not_before), notAfter: new Date(row.not_after) };
    if (this.opts.validityDays <= 0) return enclave;
    // Backdated as every certificate of the keystore is, for peers whose clock runs a little behind.
    const from = Math.max(enclave.notBefore.getTime(), nowMs - ks.backdate_seconds * 1000);
    return { notBefore: new Date(from), notAfter: new Date(Math.min(enclave.notAfter.getTime(), nowMs + this.opts.validityDays * 86_400_000)) };
  }

  async issue(robot: RobotPrincipal, input: IssueInput): Promise<IssuedIdentity> {
    const { keystore, enclave } = input;
    const key = bucketKey(robot.name, keystore, enclave);
    const nowMs = this.now().getTime();
    const { ks, row, bucket } = await this.store.read(async (r) => ({
      ...(await this.target(r, robot.name, keystore, enclave)),
      bucket: this.refill(await r.throttles.get<Bucket>(key, nowMs), nowMs),
    }));
    this.requireToken(bucket, keystore, enclave);
    if (new Date(row.not_after).getTime() <= nowMs) {
      throw new Conflict(`enclave ${keystore}:${enclave} has expired: an administrator must rotate it`, 'enclave-expired');
    }
    const csr = readCsr(input.csr);
    if (await this.store.read((r) => r.identities.seen(csr.spkiSha256))) throw keyReused();
    const signer = this.keystores.signingKeystore(ks);
    const validity = this.validity(ks, row, nowMs);
    const notAfter = validity.notAfter.toISOString();
    // Never a leading zero byte (randomSerial), so its hex is already the stored, canonical form.
    const serialBytes = randomSerial(SERIAL_BYTES);
    const certificate = issueCertificate({
      subjectCN: enclave,
      // The SPKI exactly as the CSR carried it (checked by readCsr): cheaper to re-read than a KeyObject.
      publicKeyPem: toPem('PUBLIC KEY', csr.spkiDer),
      issuer: signer.identityCa,
      ...validity,
      profile: 'enclave',
      serial: serialBytes,
    });
    const serial = serialBytes.toString('hex').toUpperCase();
    const at = this.now().toISOString();
    await this.store.grouped(async (r) => {
      // Everything decided above is decided again here, in the write transaction: the binding, the
      // enclave's state and the key's freshness may have changed since they were first looked at.
      const now = await this.target(r, robot.name, keystore, enclave);
      if (now.row.updated_at !== row.updated_at) throw new Conflict(`enclave ${keystore}:${enclave} changed meanwhile: try again`);
      // The CA that signed must still be the keystore's (not one deleted and made again meanwhile).
      if (now.ks.identity_ca_cert !== ks.identity_ca_cert) throw new Conflict(`enclave ${keystore}:${enclave} changed meanwhile: try again`);
      if ((await r.robots.get(robot.name))?.keyId !== robot.keyId) throw new NotFound(`no enclave ${keystore}:${enclave} bound to this robot`);
      if (!(await r.identities.see(csr.spkiSha256, at))) throw keyReused();
      await this.charge(r, key, keystore, enclave);
      const old = await r.identities.liveOf(robot.name, keystore, enclave);
      for (const o of old) {
        if (this.opts.reissue === 'revoke') {
          await r.identities.revoke(keystore, o.serial, at);
          await this.crls.revokeBatched(r, now.ks, { serial: o.serial, enclave, notAfter: o.not_after });
        } else await r.identities.supersede(keystore, o.serial, at);
      }
      await r.identities.insert({
        keystore,
        serial,
        robot: robot.name,
        enclave,
        spki_sha256: csr.spkiSha256,
        cert_pem: certificate,
        not_before: validity.notBefore.toISOString(),
        not_after: notAfter,
        issued_at: at,
      });
      await this.audit.record(r, {
        actor: robot.name,
        actorKind: 'robot',
        action: 'identity.issue',
        target: `${keystore}:${enclave}`,
        details: { robot: robot.name, serial: serialOut(serial), notAfter, previous: old.map((o) => serialOut(o.serial)), previousPolicy: this.opts.reissue },
      });
      // Only this robot's bundle changes now (its cert.pem); the CRL listing the previous serial follows in a batch.
      await r.publish({ kind: 'robot', robot: robot.name });
    });
    // After the unit of work: the bundle cache heard the change before `tx` returned.
    const issued: IssuedIdentity = { keystore, enclave, serial: serialOut(serial), notAfter, certificate, revision: await this.revisionOf(robot.name) };
    if (this.opts.validityDays > 0 && notAfter !== row.not_after) {
      // Two thirds into its life; a certificate that ends with its enclave is not renewed (rotation replaces it).
      const from = validity.notBefore.getTime();
      issued.renewAfter = new Date(from + ((validity.notAfter.getTime() - from) * 2) / 3).toISOString();
    }
    return issued;
  }

  /** `stored` (none: a full bucket) with what has dripped in up to `t`. */
  private refill(stored: Bucket | undefined, t: number): Bucket {
    const b = stored ?? { tokens: this.opts.burst, at: t };
    // Another replica's clock may be a little ahead: time never runs backwards for a bucket.
    const at = Math.max(b.at, t);
    return { tokens: Math.min(this.opts.burst, b.tokens + ((at - b.at) / HOUR_MS) * this.opts.perHour), at };
  }

  private requireToken(bucket: Bucket, keystore: string, enclave: string): void {
    if (bucket.tokens >= 1) return;
    const waitMs = ((1 - bucket.tokens) * HOUR_MS) / this.opts.perHour;
    throw new TooManyRequests(`too many identities requested for ${keystore}:${enclave}: try again later`, Math.max(1, Math.ceil(waitMs / 1000)));
  }

  /** Inside the unit of work that records the certificate: one token, or 429 if a request at the same time took the last. */
  private async charge(r: Repos, key: string, keystore: string, enclave: string): Promise<void> {
    const t = this.now().getTime();
    const bucket = this.refill(await r.throttles.get<Bucket>(key, t), t);
    this.requireToken(bucket, keystore, enclave);
    bucket.tokens -= 1;
    // Kept until the bucket is full again; a bucket not found is a full one.
    await r.throttles.put(key, bucket, bucket.at + ((this.opts.burst - bucket.tokens) / this.opts.perHour) * HOUR_MS + 1);
    if (++this.charges % SWEEP_EVERY === 0) await r.throttles.sweep(t);
  }

  private view(r: IdentityRow, nowMs: number): IdentityView {
    const status = r.status === 'live' && new Date(r.not_after).getTime() <= nowMs ? 'expired' : r.status;
    return {
      keystore: r.keystore,
      enclave: r.enclave,
      serial: serialOut(r.serial),
      notBefore: r.not_before,
      notAfter: r.not_after,
      status,
      issuedAt: r.issued_at,
      ...(r.revoked_at ? { revokedAt: r.revoked_at } : {}),
    };
  }

  /** The robot's identities the caller may read (a member: on enclaves they may read, of robots they may see). */
  list(caller: Caller, robot: string): Promise<IdentityView[]> {
    return this.store.read(async (r) => {
      await this.visibleRobot(r, caller, robot);
      return this.visibleIn(r, caller, robot);
    });
  }

  /** As `list`, for a robot the caller is known to see (its detail page). */
  visible(caller: Caller, robot: string): Promise<IdentityView[]> {
    return this.store.read((r) => this.visibleIn(r, caller, robot));
  }

  private async visibleIn(r: Repos, caller: Caller, robot: string): Promise<IdentityView[]> {
    const nowMs = this.now().getTime();
    return (await r.identities.forRobot(robot))
      .filter((i) => caller.isAdmin || caller.can('read', i.keystore, i.enclave))
      .map((i) => this.view(i, nowMs));
  }

  private async visibleRobot(r: Repos, caller: Caller, robot: string): Promise<void> {
    const found = await r.robots.get(robot);
    if (!found) throw new NotFound(`no robot "${robot}"`);
    if (!caller.robotVisible(found.labels)) throw caller.robotNotVisible(robot);
  }

  /** Revokes one certificate of one robot: that serial alone joins the CRL. Needs `manage` on its enclave. */
  async revoke(caller: Caller, robot: string, keystore: string, serial: string): Promise<void> {
    // Nothing to wait for but the database: read, decide and write in one unit of work.
    await this.store.tx(async (r) => {
      await this.visibleRobot(r, caller, robot);
      const stored = serialIn(serial);
      const found = /^[0-9A-F]{1,40}$/.test(stored) ? await r.identities.get(keystore, stored) : undefined;
      if (!found || found.robot !== robot) throw new NotFound(`robot ${robot} has no identity ${serial} in keystore ${keystore}`);
      caller.require({ capability: 'read', keystore, enclave: found.enclave });
      const grant = caller.require({ capability: 'manage', keystore, enclave: found.enclave });
      const ks = await r.keystores.get(keystore);
      if (!ks) throw new NotFound(`no keystore "${keystore}"`);
      if (!(await r.identities.revoke(keystore, stored, this.now().toISOString()))) {
        throw new Conflict(`identity ${serialOut(stored)} of robot ${robot} is revoked already`, 'identity-revoked');
      }
      await this.crls.revokeNow(r, ks, [{ serial: stored, enclave: found.enclave, notAfter: found.not_after }]);
      await this.audit.record(r, {
        actor: caller.name,
        actorKind: 'user',
        action: 'identity.revoke',
        target: `${keystore}:${found.enclave}`,
        grantId: grant,
        details: { robot, serial: serialOut(stored) },
      });
      // The CRL changed: every robot of the keystore gets the new crl.pem (their certificates stay as they are).
      await r.publish({ kind: 'keystore', keystore });
    });
  }

  /**
   * Inside the caller's unit of work (a robot deleted, its device key revoked): every certificate of the
   * robot that is still good joins its keystore's CRL, at once. Returns the keystores whose CRL changed (the
   * caller publishes them in that unit of work) and the serials.
   */
  async revokeAllOf(r: Repos, robot: string): Promise<{ keystores: string[]; serials: string[] }> {
    const at = this.now().toISOString();
    const byKeystore = new Map<string, Revoked[]>();
    for (const i of await r.identities.unrevokedOfRobot(robot)) {
      await r.identities.revoke(i.keystore, i.serial, at);
      let list = byKeystore.get(i.keystore);
      if (!list) byKeystore.set(i.keystore, (list = []));
      list.push({ serial: i.serial, enclave: i.enclave, notAfter: i.not_after });
    }
    const serials: string[] = [];
    for (const [name, list] of byKeystore) {
      const ks = await r.keystores.get(name);
      if (ks) await this.crls.revokeNow(r, ks, list);
      serials.push(...list.map((l) => serialOut(l.serial)));
    }
    return { keystores: [...byKeystore.keys()], serials };
  }
}

const keyReused = () => new Conflict('this public key was certified before: make a new key for every request', 'key-reused');
