/**
 * Per-robot enclave identities on the robot (issue 14). For an enclave the bundle marks `per-robot`, the
 * server holds no private key: this robot makes a P-256 key for it, sends a PKCS#10 request signed by that key
 * to `POST /v1/robot/identity` and gets a certificate whose subject is the enclave's own. The key lives only in
 * this process's memory and in the enclave folder of the runtime folder (tmpfs, written by writer.ts with the
 * usual 0600 mode); it is never written to disk and never sent. A restart starts with no key (and the runtime
 * folder is purged), so it makes a new one and gets a new certificate.
 *
 * The server is the authority on which certificate this robot holds: the bundle's `cert.pem` is used when it
 * matches this robot's key. A bundle that lists the enclave without a certificate matching a key the server
 * already certified means the identity was taken back (an admin revoked it, or the enclave switched mode): the
 * enclave is removed, its key discarded, and a new identity is requested with a new key.
 */
import { randomInt, X509Certificate, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { IdentityRequest } from '../common/robot-wire.js';
import { Backoff, classifyTrouble } from './backoff.js';
import { enclaveId, type HeldEnclave } from './bundle.js';
import { buildCsr, newIdentityKey, spkiDer } from './csr.js';
import { errorMessage, type Logger } from './log.js';
import type { IdentityOutcome } from './robot-client.js';

/** The part of RobotClient this needs. */
export interface IdentityIssuer {
  requestIdentity(req: IdentityRequest, signal?: AbortSignal): Promise<IdentityOutcome>;
}

/** How long to wait before asking again about an enclave the server says is not bound (the bundle catches up). */
const UNBOUND_WAIT_MS = 30_000;

interface HeldKey {
  privateKey: KeyObject;
  /** PKCS#8 PEM, as key.pem: what DDS reads. */
  keyPem: string;
  spki: Buffer;
  /** The certificate the server issued for this key, until a bundle carries it. */
  issued?: { certPem: string; serial: string; notAfter: string; notAfterMs: number; at: number };
  /** A bundle carried a certificate for this key (from then on the bundle alone decides). */
  confirmed: boolean;
  /**
   * When to replace this key and its certificate (short-lived robot certificates; the server says when). The
   * server's clock against ours: a few seconds of skew do not matter against a lifetime of days.
   */
  renewAtMs?: number;
}

export interface Completion {
  /** Enclaves ready to write: shared ones as they came, per-robot ones with this robot's key and certificate. */
  ready: HeldEnclave[];
  /** Per-robot enclaves still without a certificate, and when to ask again (local clock, ms). */
  waiting: { id: string; retryAtMs: number }[];
  /** When a held certificate is due for renewal, or its renewal may be tried again (local clock, ms). */
  renewals: number[];
}

/** Whether `certPem` certifies the public half of the key whose SPKI is `spki`. */
function certifies(certPem: string | undefined, spki: Buffer): boolean {
  if (certPem === undefined) return false;
  try {
    return new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'der' }).equals(spki);
  } catch {
    return false;
  }
}

export class IdentityKeeper {
  private readonly keys = new Map<string, HeldKey>();
  private readonly retryAt = new Map<string, number>();
  private readonly backoffs = new Map<string, Backoff>();

  constructor(
    private readonly issuer: IdentityIssuer,
    private readonly log: Logger,
    private readonly backoff: { baseMs: number; maxMs: number } = { baseMs: 1000, maxMs: 300_000 },
    private readonly now: () => number = Date.now,
  ) {}

  /** Enclaves this keeper holds a key for (`KEYSTORE:PATH`). */
  heldKeys(): string[] {
    return [...this.keys.keys()];
  }

  /**
   * The per-robot enclaves of `enclaves` whose identity the server took back: it certified this robot's key
   * before, and the bundle lists the enclave without that certificate. Their keys are discarded here. A
   * bundle that arrived (`receivedAt`, performance.now()) before the certificate was issued predates it and
   * takes nothing back: with two enclaves waiting, a long poll may deliver the revision made by the first
   * issuance while the second one is under way. Keys of enclaves the bundle no longer lists are discarded.
   */
  takenBack(enclaves: HeldEnclave[], receivedAt: number): HeldEnclave[] {
    const listed = new Set(enclaves.filter((e) => e.identity === 'per-robot').map(enclaveId));
    for (const id of [...this.keys.keys()]) if (!listed.has(id)) this.discard(id);
    const out: HeldEnclave[] = [];
    for (const e of enclaves) {
      if (e.identity !== 'per-robot') continue;
      const id = enclaveId(e);
      const key = this.keys.get(id);
      if (!key || (!key.confirmed && !key.issued)) continue; // nothing certified yet: nothing to take back
      if (certifies(e.files['cert.pem'], key.spki)) continue;
      if (!key.confirmed && key.issued !== undefined && receivedAt < key.issued.at) continue;
      out.push(e);
      this.discard(id);
    }
    return out;
  }

  /**
   * Completes the per-robot enclaves: with this robot's key when the bundle's certificate matches it (or the
   * certificate just issued for it), otherwise after asking the server for a certificate for a new key.
   * An enclave the server cannot serve now (rate limit, no contact, not bound)
   * is left out and listed in `waiting`. Network trouble never throws here.
   */
  async complete(enclaves: HeldEnclave[], signal?: AbortSignal): Promise<Completion> {
    const ready: HeldEnclave[] = [];
    const waiting: Completion['waiting'] = [];
    const renewals: number[] = [];
    for (const e of enclaves) {
      if (e.identity !== 'per-robot') {
        ready.push(e);
        continue;
      }
      const id = enclaveId(e);
      const key = this.keys.get(id);
      if (key && certifies(e.files['cert.pem'], key.spki)) {
        key.confirmed = true;
        key.issued = undefined;
        const held = this.withKey(e, key, e.files['cert.pem']!, e.notAfter, e.notAfterMs, e.identitySerial);
        ready.push(key.renewAtMs !== undefined && key.renewAtMs <= this.now() ? await this.renew(e, held, signal) : held);
        this.noteRenewal(id, renewals);
        continue;
      }
      if (key?.issued) {
        ready.push(this.withKey(e, key, key.issued.certPem, key.issued.notAfter, key.issued.notAfterMs, key.issued.serial));
        this.noteRenewal(id, renewals);
        continue;
      }
      const at = this.retryAt.get(id);
      if (at !== undefined && at > this.now()) {
        waiting.push({ id, retryAtMs: at });
        continue;
      }
      const got = await this.request(e, signal);
      if (got) {
        ready.push(got);
        this.noteRenewal(id, renewals);
      }
      else if (!signal?.aborted) waiting.push({ id, retryAtMs: this.retryAt.get(id) ?? this.now() });
    }
    return { ready, waiting, renewals };
  }

  /**
   * A new key and certificate for an enclave whose certificate is due for renewal. Until the server issues
   * it, the current key and certificate stay in use (`held`); a refusal is asked again when allowed.
   */
  private async renew(e: HeldEnclave, held: HeldEnclave, signal?: AbortSignal): Promise<HeldEnclave> {
    const id = enclaveId(e);
    const at = this.retryAt.get(id);
    if (at !== undefined && at > this.now()) return held;
    this.log.info(`identity for ${id}${held.identitySerial ? ` (serial ${held.identitySerial})` : ''} is due for renewal: new key, new request`);
    const renewed = await this.request(e, signal, true);
    // Unbound meanwhile: the key is gone and the next bundle drops the enclave.
    return renewed ?? held;
  }

  private withKey(e: HeldEnclave, key: HeldKey, certPem: string, notAfter: string, notAfterMs: number, serial: string | undefined): HeldEnclave {
    const out: HeldEnclave = { ...e, notAfter, notAfterMs, files: { ...e.files, 'cert.pem': certPem, 'key.pem': key.keyPem } };
    if (serial !== undefined) out.identitySerial = serial;
    return out;
  }

  private discard(id: string): void {
    this.keys.delete(id);
    this.retryAt.delete(id);
    this.backoffs.delete(id);
  }

  /** When the key now held for `id` is due for renewal, or (after a refusal) may be asked again. */
  private noteRenewal(id: string, renewals: number[]): void {
    const at = this.keys.get(id)?.renewAtMs;
    if (at !== undefined) renewals.push(Math.max(at, this.retryAt.get(id) ?? 0));
  }

  private makeKey(): HeldKey {
    const { privateKey } = newIdentityKey();
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    return { privateKey, keyPem, spki: spkiDer(privateKey), confirmed: false };
  }

  private newKey(id: string): HeldKey {
    const key = this.makeKey();
    this.keys.set(id, key);
    return key;
  }

  private wait(id: string, ms: number): void {
    this.retryAt.set(id, this.now() + ms);
  }

  /**
   * One issuance for `e` (a new key when none is held, or the server has seen it; always a new one when
   * `renewing`, kept aside until its certificate arrives); undefined when not now.
   */
  private async request(e: HeldEnclave, signal?: AbortSignal, renewing = false): Promise<HeldEnclave | undefined> {
    const id = enclaveId(e);
    const backoff = this.backoffs.get(id) ?? new Backoff(this.backoff.baseMs, this.backoff.maxMs);
    this.backoffs.set(id, backoff);
    for (let attempt = 0; attempt < 2; attempt++) {
      const key = renewing ? this.makeKey() : (this.keys.get(id) ?? this.newKey(id));
      let outcome: IdentityOutcome;
      try {
        outcome = await this.issuer.requestIdentity({ keystore: e.keystore, enclave: e.path, csr: buildCsr(key.privateKey, e.path) }, signal);
      } catch (err) {
        if (signal?.aborted) return undefined;
        const trouble = classifyTrouble(err);
        const delay = backoff.next(trouble);
        this.wait(id, delay);
        const asked = trouble.retryAfterMs === undefined ? '' : ` (the server asked for ${Math.round(trouble.retryAfterMs / 1000)} s)`;
        this.log.warn(`identity for ${id} not issued: ${errorMessage(err)}; asking again in ${(delay / 1000).toFixed(1)} s${asked}`);
        return undefined;
      }
      if (outcome.kind === 'key-reused') {
        // Only a key made elsewhere (or a server that lost its records) can collide: never reuse it.
        this.log.warn(`identity for ${id}: the server has seen this key before: making a new one`);
        if (!renewing) this.keys.delete(id);
        continue;
      }
      if (outcome.kind === 'unbound') {
        this.log.warn(`identity for ${id}: the server says the enclave is not bound to this robot`);
        this.discard(id);
        this.wait(id, UNBOUND_WAIT_MS + randomInt(0, 5000));
        return undefined;
      }
      const issued = outcome.identity;
      if (!certifies(issued.certificate, key.spki)) {
        this.wait(id, backoff.next());
        this.log.error(`identity for ${id}: the server's certificate is not for this robot's key: ignored`);
        return undefined;
      }
      const notAfterMs = Date.parse(issued.notAfter);
      key.issued = { certPem: issued.certificate, serial: issued.serial, notAfter: new Date(notAfterMs).toISOString(), notAfterMs, at: performance.now() };
      const renewAtMs = issued.renewAfter === undefined ? NaN : Date.parse(issued.renewAfter);
      if (!Number.isNaN(renewAtMs)) key.renewAtMs = renewAtMs;
      if (renewing) this.keys.set(id, key);
      backoff.reset();
      this.retryAt.delete(id);
      this.log.info(`identity for ${id} issued: serial ${issued.serial}, valid until ${key.issued.notAfter}`);
      return this.withKey(e, key, key.issued.certPem, key.issued.notAfter, notAfterMs, issued.serial);
    }
    this.wait(id, backoff.next());
    return undefined;
  }
}
