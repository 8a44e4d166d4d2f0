import crypto from 'node:crypto';
import { selectorMatches } from '../acl/acl.js';
import type { AuditService } from '../audit/audit.service.js';
import type { BindingsService } from '../bindings/bindings.service.js';
import type { Change, ChangeFeed } from '../events/changes.js';
import type { EnclaveRow, KeystoreRow, KeystoresRepo } from '../keystores/keystores.repo.js';
import { enclaveKeyContext } from '../keystores/keystores.service.js';
import type { RobotsRepo } from '../robots/robots.repo.js';
import type { Sealer } from '../secrets/seal.js';

export interface BundleEnclave {
  path: string;
  notAfter: string;
  files: Record<string, string>;
}

interface CacheEntry {
  revision: string;
  /** Serialized once per change, sent as-is to every request until the next change. */
  body: string;
  keystores: Set<string>;
  enclaves: Set<string>;
  summary: string[];
}

interface Waiter {
  keyId: string;
  known: string;
  done: (outcome: { kind: 'changed'; entry: CacheEntry } | { kind: 'timeout' } | { kind: 'gone' }) => void;
}

const MAX_WAIT_S = 60;
/**
 * Long polls one robot may hold at once. An agent needs one (two while it reconnects); a stolen token must not
 * park thousands of requests. A newer poll answers the oldest (304), so a reconnecting agent is never refused.
 */
export const MAX_WAITERS_PER_ROBOT = 2;

/**
 * Bundles: what each robot may hold now. Computed once per change and cached per robot; a request reads
 * the cache. Long polls park a callback (no CPU while waiting) and are answered as soon as a change
 * touching that robot produces a new revision.
 */
export class BundlesService {
  private readonly cache = new Map<string, CacheEntry>();
  /**
   * Each enclave's serialized `{path,notAfter,files}` (key unsealed once), shared by every robot bound to
   * it: a change that touches a thousand robots costs a thousand cheap assemblies, not a thousand unseals.
   */
  private readonly enclaveJson = new Map<string, string | null>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** The revision last delivered to each robot: a delivery is audited once per robot and revision. */
  private readonly delivered = new Map<string, string>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly keystores: KeystoresRepo,
    private readonly robots: RobotsRepo,
    private readonly bindings: BindingsService,
    private readonly sealer: Sealer,
    private readonly audit: AuditService,
    changes: ChangeFeed,
  ) {
    this.unsubscribe = changes.subscribe((c) => this.onChange(c));
  }

  close(): void {
    this.unsubscribe();
    for (const set of this.waiters.values()) for (const w of set) w.done({ kind: 'timeout' });
    this.waiters.clear();
  }

  /** The robot's current bundle (from cache when nothing changed since it was computed). */
  current(robot: string): CacheEntry {
    let entry = this.cache.get(robot);
    if (!entry) {
      entry = this.compute(robot);
      this.cache.set(robot, entry);
    }
    return entry;
  }

  /**
   * Resolves with the bundle when its revision differs from `known`, or with null after `waitSeconds`
   * (or at once when `waitSeconds` is 0 and nothing changed).
   */
  wait(robot: string, keyId: string, known: string | undefined, waitSeconds: number, signal?: AbortSignal): Promise<CacheEntry | null | 'gone'> {
    const entry = this.current(robot);
    if (known === undefined || entry.revision !== known) return Promise.resolve(entry);
    if (waitSeconds <= 0) return Promise.resolve(null);
    return new Promise((resolve) => {
      const held = this.waiters.get(robot);
      // Oldest first (a Set iterates in insertion order).
      while (held && held.size >= MAX_WAITERS_PER_ROBOT) held.values().next().value!.done({ kind: 'timeout' });
      let set = this.waiters.get(robot);
      if (!set) this.waiters.set(robot, (set = new Set()));
      const timer = setTimeout(() => waiter.done({ kind: 'timeout' }), Math.min(waitSeconds, MAX_WAIT_S) * 1000);
      const waiter: Waiter = {
        keyId,
        known,
        done: (outcome) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          set!.delete(waiter);
          if (set!.size === 0) this.waiters.delete(robot);
          resolve(outcome.kind === 'changed' ? outcome.entry : outcome.kind === 'gone' ? 'gone' : null);
        },
      };
      // The robot gave up waiting (its connection closed): forget this poll, not the robot's others.
      const onAbort = () => waiter.done({ kind: 'timeout' });
      set.add(waiter);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Audits a delivery the first time a robot receives a revision (not every poll that re-sends it). */
  recordDelivery(robot: string, entry: CacheEntry): void {
    if (this.delivered.get(robot) === entry.revision) return;
    this.delivered.set(robot, entry.revision);
    this.audit.record({
      actor: robot,
      actorKind: 'robot',
      action: 'bundle.deliver',
      target: robot,
      details: { revision: entry.revision, enclaves: entry.summary },
    });
  }

  private onChange(change: Change): void {
    if (change.kind === 'robot') this.delivered.delete(change.robot);
    if (change.kind === 'keystore') {
      for (const key of this.enclaveJson.keys()) if (key.startsWith(`${change.keystore}\0`)) this.enclaveJson.delete(key);
    } else if (change.kind === 'enclave') {
      this.enclaveJson.delete(`${change.keystore}\0${change.enclave}`);
    }
    const affected = new Set<string>();
    for (const [robot, entry] of this.cache) {
      if (this.touches(change, robot, entry)) affected.add(robot);
    }
    for (const robot of this.waiters.keys()) if (!this.cache.has(robot) || this.touchesRobot(change, robot)) affected.add(robot);
    for (const robot of affected) this.cache.delete(robot);
    // Robots waiting right now get their new bundle at once; the others are recomputed on their next request.
    for (const robot of affected) {
      const set = this.waiters.get(robot);
      if (!set || set.size === 0) continue;
      const record = this.robots.get(robot);
      for (const w of [...set]) {
        if (!record || record.keyId !== w.keyId) w.done({ kind: 'gone' });
      }
      if (!record || !this.waiters.get(robot)?.size) continue;
      const entry = this.current(robot);
      for (const w of [...(this.waiters.get(robot) ?? [])]) if (entry.revision !== w.known) w.done({ kind: 'changed', entry });
    }
  }

  private touches(change: Change, robot: string, entry: CacheEntry): boolean {
    switch (change.kind) {
      case 'keystore':
        return entry.keystores.has(change.keystore);
      case 'enclave':
        return entry.enclaves.has(`${change.keystore}:${change.enclave}`);
      default:
        return this.touchesRobot(change, robot);
    }
  }

  private touchesRobot(change: Change, robot: string): boolean {
    switch (change.kind) {
      case 'robot':
        return change.robot === robot;
      case 'bindings': {
        if (change.robot !== undefined) return change.robot === robot;
        if (change.selector !== undefined) {
          const r = this.robots.get(robot);
          return !r || selectorMatches(change.selector, r.labels);
        }
        return true;
      }
      default:
        return false;
    }
  }

  private compute(robot: string): CacheEntry {
    const record = this.robots.get(robot);
    const targets = record ? this.bindings.enclavesFor(robot, record.labels) : [];
    const byKeystore = new Map<string, string[]>();
    for (const t of targets) {
      const list = byKeystore.get(t.keystore) ?? [];
      list.push(t.enclave);
      byKeystore.set(t.keystore, list);
    }
    const parts: string[] = [];
    const enclaveKeys = new Set<string>();
    const summary: string[] = [];
    for (const name of [...byKeystore.keys()].sort()) {
      let ks: KeystoreRow | undefined;
      const enclaves: string[] = [];
      for (const path of byKeystore.get(name)!.sort()) {
        const key = `${name}\0${path}`;
        // Bound-but-revoked enclaves are tracked too, so a change to them reaches this robot.
        enclaveKeys.add(`${name}:${path}`);
        let json = this.enclaveJson.get(key);
        if (json === undefined) {
          ks ??= this.keystores.get(name);
          const row = ks && this.keystores.getEnclave(name, path);
          json = ks && row && row.status === 'active' ? JSON.stringify(this.enclaveFiles(ks, row)) : null;
          this.enclaveJson.set(key, json);
        }
        if (json === null) continue;
        enclaves.push(json);
        summary.push(`${name}:${path}`);
      }
      if (enclaves.length) parts.push(`{"name":${JSON.stringify(name)},"enclaves":[${enclaves.join(',')}]}`);
    }
    const content = `[${parts.join(',')}]`;
    const revision = crypto.createHash('sha256').update(robot).update('\n').update(content).digest('hex').slice(0, 32);
    return {
      revision,
      body: `{"revision":"${revision}","robot":${JSON.stringify(robot)},"keystores":${content}}`,
      keystores: new Set(byKeystore.keys()),
      enclaves: enclaveKeys,
      summary,
    };
  }

  private enclaveFiles(ks: KeystoreRow, e: EnclaveRow): BundleEnclave {
    const files: Record<string, string> = {
      'identity_ca.cert.pem': ks.identity_ca_cert,
      'cert.pem': e.cert_pem,
      'key.pem': this.sealer.openText(e.key_sealed, enclaveKeyContext(ks.name, e.path)),
      'permissions_ca.cert.pem': ks.permissions_ca_cert,
      'governance.p7s': ks.governance_p7s,
      'permissions.p7s': e.permissions_p7s,
    };
    if (ks.crl_pem) files['crl.pem'] = ks.crl_pem;
    return { path: e.path, notAfter: e.not_after, files };
  }
}
