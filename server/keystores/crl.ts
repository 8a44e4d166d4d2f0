import type { Db } from '../db/database.js';
import type { ChangeFeed } from '../events/changes.js';
import { inspectCertificate, issueCrl } from '../pki/index.js';
import type { KeystoreRow, KeystoresRepo } from './keystores.repo.js';
import type { KeystoresService } from './keystores.service.js';

/** How long revocations made by robots' re-issues wait to be signed into their keystore's CRL together. */
export const DEFAULT_CRL_BATCH_MS = 2000;

/**
 * How long after its certificate expires a serial stays on the CRL. An expired certificate is refused anyway
 * (RFC 5280 lets its entry go); the margin covers peers whose clock lags behind (agents report their skew).
 */
export const CRL_EXPIRED_GRACE_MS = 7 * 24 * 3600 * 1000;

/** A certificate being revoked: its serial, its enclave, and when it expires (ISO; null when not known). */
export interface Revoked {
  serial: string;
  enclave: string;
  notAfter: string | null;
}

/**
 * Each keystore's CRL: the serials in `revocations`, signed by the identity CA. A revocation an administrator
 * asks for is signed at once, inside the transaction that records it. A revocation caused by a robot asking for
 * a new identity (its previous certificate, after a restart emptied its RAM disk) is batched instead: the CRL is
 * in every bundle of the keystore, so each re-signing is a fan-out to the whole fleet, and a boot storm of ten
 * thousand robots re-issuing would otherwise be ten thousand fleet-wide fan-outs. Batched, it is one re-signing
 * and one fan-out per keystore per `batchMs`. The old certificate belonged to a key the robot has already
 * thrown away (its RAM disk was emptied), so listing it a couple of seconds later loses nothing. `crl_pending`
 * marks a keystore with revocations its CRL does not list yet, so a restart in between re-signs it.
 */
export class KeystoreCrls {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private closed = false;

  constructor(
    private readonly db: Db,
    private readonly keystores: KeystoresService,
    private readonly changes: ChangeFeed,
    private readonly now: () => Date,
    private readonly batchMs = DEFAULT_CRL_BATCH_MS,
  ) {}

  private get repo(): KeystoresRepo {
    return this.keystores.repo;
  }

  /** Records the revocations and re-signs the CRL once, inside the caller's write transaction. */
  revokeNow(ks: KeystoreRow, revoked: readonly Revoked[]): void {
    if (revoked.length === 0) return;
    const at = this.now().toISOString();
    for (const r of revoked) this.repo.addRevocation(ks.name, r.serial, r.enclave, at, r.notAfter);
    this.resign(ks);
  }

  /** Records the revocation inside the caller's write transaction; the CRL lists it within `batchMs`. */
  revokeBatched(ks: KeystoreRow, r: Revoked): void {
    this.repo.addRevocation(ks.name, r.serial, r.enclave, this.now().toISOString(), r.notAfter);
    this.repo.setCrlPending(ks.name);
    this.schedule(ks.name);
  }

  /** Signs what is pending for `keystore` now; true when its CRL changed (its robots are told). */
  flush(keystore: string): boolean {
    const timer = this.timers.get(keystore);
    if (timer) clearTimeout(timer);
    this.timers.delete(keystore);
    const changed = this.db
      .transaction(() => {
        const row = this.repo.get(keystore);
        if (!row || row.crl_pending !== 1) return false;
        this.resign(row);
        return true;
      })
      .immediate();
    if (changed) this.changes.publish({ kind: 'keystore', keystore });
    return changed;
  }

  /** At start-up: CRLs left pending by a stop in the middle of a batch. */
  flushAll(): void {
    for (const name of this.repo.pendingCrls()) this.flush(name);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private schedule(keystore: string): void {
    if (this.closed || this.timers.has(keystore)) return;
    // A database closed meanwhile (the server stopping) keeps its pending mark: the next start signs it.
    const timer = setTimeout(() => this.db.open && this.flush(keystore), this.batchMs);
    timer.unref();
    this.timers.set(keystore, timer);
  }

  private resign(ks: KeystoreRow): void {
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    // Serials of certificates expired for longer than the grace are left out: the CRL stays the size of the
    // revocations that still matter, however many times robots have restarted.
    const horizon = now.getTime() - CRL_EXPIRED_GRACE_MS;
    const revoked = this.repo
      .revocations(ks.name)
      .filter((r) => r.not_after === null || new Date(r.not_after).getTime() > horizon)
      .map((r) => ({ serialHex: r.serial, revokedAt: new Date(r.revoked_at) }));
    // The CRL number is read inside the transaction: two revocations at once must not sign the same number.
    const crlNumber = (this.repo.get(ks.name)?.crl_number ?? ks.crl_number) + 1;
    // nextUpdate = the CA's end of life: openssl (and so DDS) rejects every certificate once a CRL is past
    // its nextUpdate, which would turn a missed re-sign into a fleet-wide outage.
    const crl = issueCrl({
      issuer: signer.identityCa,
      revoked,
      thisUpdate: new Date(now.getTime() - ks.backdate_seconds * 1000),
      nextUpdate: inspectCertificate(ks.identity_ca_cert).notAfter,
      crlNumber,
    });
    this.repo.setCrl(ks.name, crl, crlNumber, now.toISOString());
  }
}
