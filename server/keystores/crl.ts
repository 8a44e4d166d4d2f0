import { inspectCertificate, issueCrl } from '../pki/index.js';
import type { Repos, Store } from '../store/store.js';
import type { KeystoreRow } from './keystores.repo.js';
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
 * asks for is signed at once, inside the unit of work that records it. A revocation caused by a robot asking for
 * a new identity (its previous certificate, after a restart emptied its RAM disk) is batched instead: the CRL is
 * in every bundle of the keystore, so each re-signing is a fan-out to the whole fleet, and a boot storm of ten
 * thousand robots re-issuing would otherwise be ten thousand fleet-wide fan-outs. Batched, it is one re-signing
 * and one fan-out per keystore per `batchMs`. The old certificate belonged to a key the robot has already
 * thrown away (its RAM disk was emptied), so listing it a couple of seconds later loses nothing. `crl_pending`
 * marks a keystore with revocations its CRL does not list yet, so a restart in between re-signs it.
 */
export class KeystoreCrls {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Flushes started by a timer, so `close` can wait for them before the store closes. */
  private readonly flushing = new Set<Promise<unknown>>();
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly keystores: KeystoresService,
    private readonly now: () => Date,
    private readonly batchMs = DEFAULT_CRL_BATCH_MS,
    /** A timed flush that failed: its keystore keeps its pending mark, and the next flush (or start) signs it. */
    private readonly onFlushError: (keystore: string, err: unknown) => void = () => {},
  ) {}

  /** Records the revocations and re-signs the CRL once, inside the caller's unit of work. */
  async revokeNow(r: Repos, ks: KeystoreRow, revoked: readonly Revoked[]): Promise<void> {
    if (revoked.length === 0) return;
    const at = this.now().toISOString();
    for (const x of revoked) await r.keystores.addRevocation(ks.name, x.serial, x.enclave, at, x.notAfter);
    await this.resign(r, ks);
  }

  /** Records the revocation inside the caller's unit of work; the CRL lists it within `batchMs`. */
  async revokeBatched(r: Repos, ks: KeystoreRow, x: Revoked): Promise<void> {
    await r.keystores.addRevocation(ks.name, x.serial, x.enclave, this.now().toISOString(), x.notAfter);
    await r.keystores.setCrlPending(ks.name);
    // A unit of work that rolls back leaves no pending mark: the flush then finds nothing to sign.
    this.schedule(ks.name);
  }

  /** Signs what is pending for `keystore` now, in a unit of work of its own; true when its CRL changed (its robots are told). */
  async flush(keystore: string): Promise<boolean> {
    const timer = this.timers.get(keystore);
    if (timer) clearTimeout(timer);
    this.timers.delete(keystore);
    return this.store.tx(async (r) => {
      const row = await r.keystores.get(keystore);
      if (!row || row.crl_pending !== 1) return false;
      await this.resign(r, row);
      await r.publish({ kind: 'keystore', keystore });
      return true;
    });
  }

  /** At start-up: CRLs left pending by a stop in the middle of a batch. */
  async flushAll(): Promise<void> {
    for (const name of await this.store.read((r) => r.keystores.pendingCrls())) await this.flush(name);
  }

  /** No more timed flushes; resolves once those already running have finished. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled([...this.flushing]);
  }

  private schedule(keystore: string): void {
    if (this.closed || this.timers.has(keystore)) return;
    const timer = setTimeout(() => {
      this.timers.delete(keystore);
      // A store closed meanwhile (the server stopping) keeps the pending mark: the next start signs it.
      if (this.closed) return;
      const done = this.flush(keystore)
        .catch((err: unknown) => this.onFlushError(keystore, err))
        .finally(() => this.flushing.delete(done));
      this.flushing.add(done);
    }, this.batchMs);
    timer.unref();
    this.timers.set(keystore, timer);
  }

  /** Inside a unit of work: signs the keystore's CRL anew with every revocation that still matters. */
  private async resign(r: Repos, ks: KeystoreRow): Promise<void> {
    const signer = this.keystores.signingKeystore(ks);
    const now = this.now();
    // Serials of certificates expired for longer than the grace are left out: the CRL stays the size of the
    // revocations that still matter, however many times robots have restarted.
    const horizon = now.getTime() - CRL_EXPIRED_GRACE_MS;
    const revoked = (await r.keystores.revocations(ks.name))
      .filter((x) => x.not_after === null || new Date(x.not_after).getTime() > horizon)
      .map((x) => ({ serialHex: x.serial, revokedAt: new Date(x.revoked_at) }));
    // The CRL number is read inside the transaction: two revocations at once must not sign the same number.
    const crlNumber = ((await r.keystores.get(ks.name))?.crl_number ?? ks.crl_number) + 1;
    // nextUpdate = the CA's end of life: openssl (and so DDS) rejects every certificate once a CRL is past
    // its nextUpdate, which would turn a missed re-sign into a fleet-wide outage.
    const crl = issueCrl({
      issuer: signer.identityCa,
      revoked,
      thisUpdate: new Date(now.getTime() - ks.backdate_seconds * 1000),
      nextUpdate: inspectCertificate(ks.identity_ca_cert).notAfter,
      crlNumber,
    });
    await r.keystores.setCrl(ks.name, crl, crlNumber, now.toISOString());
  }
}
