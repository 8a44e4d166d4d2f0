import crypto from 'node:crypto';
import { selectorMatches } from '../acl/acl.js';
import type { AuditEvent, AuditService } from '../audit/audit.service.js';
import { robotTokenVersion } from '../auth/tokens.js';
import type { BindingsService } from '../bindings/bindings.service.js';
import type { Change } from '../events/changes.js';
import { deflateAround, type Piece } from '../http/gzip-pieces.js';
import { serialOut } from '../identities/identities.service.js';
import type { EnclaveRow, KeystoreRow } from '../keystores/keystores.repo.js';
import { enclaveKeyContext } from '../keystores/keystores.service.js';
import { inspectCertificate } from '../pki/index.js';
import type { Robot } from '../robots/robots.repo.js';
import type { Sealer } from '../secrets/seal.js';
import type { Repos, Store } from '../store/store.js';
import { DEFAULT_REPORTS_LATER_FROM } from './wire.js';

export interface BundleEnclave {
  path: string;
  notAfter: string;
  /** Absent: shared (the key is in `files`). */
  identity?: 'per-robot';
  /** Per-robot: the serial of the robot's own certificate (`files['cert.pem']`), when it holds a live one. */
  identitySerial?: string;
  files: Record<string, string>;
}

/** A shared enclave's JSON, and where its private key sits in it (string offsets of `"key.pem":"…"`). */
interface SharedJson {
  text: string;
  key: [number, number];
}

/**
 * A per-robot enclave's JSON, cut where the robot's own part goes (`notAfter`, `identitySerial` and its
 * `cert.pem`): `head` + the robot's part + `tail`. Everything but the robot's part is shared.
 */
interface PerRobotJson {
  head: string;
  tail: string;
  /** `notAfter` when the robot holds no certificate yet: the identity CA's. */
  caNotAfter: string;
}

/** Where one robot's own part goes in shared content. */
interface Hole {
  keystore: string;
  path: string;
  caNotAfter: string;
}

/**
 * The keystores part of a bundle for one set of bound enclaves, shared by every robot bound to exactly that
 * set: ten thousand robots bound by one selector hold one copy, not ten thousand.
 */
interface Content {
  /**
   * `[{"name":…,"enclaves":[…]}]`, serialized once, cut at each per-robot enclave's hole: `segments` has one
   * more entry than `holes`, and a robot's bytes are the segments with its own parts in between. Without
   * per-robot enclaves it is one segment, the same bytes for every robot bound alike.
   */
  segments: Buffer[];
  /** Byte ranges of each segment that hold a private key: stored, never compressed (see gzip-pieces.ts). */
  secrets: [number, number][][];
  /** Each segment as deflate blocks, made on the first gzip answer and shared like the segments. */
  deflated?: Buffer[];
  holes: Hole[];
  hash: string;
  keystores: Set<string>;
  /** `keystore:path` of every bound enclave, revoked ones included, so a change to any of them is seen. */
  enclaves: Set<string>;
  summary: string[];
}

export interface CacheEntry {
  revision: string;
  robot: string;
  content: Content;
  /** This robot's part for each of `content.holes`: its certificate and serial, a few hundred bytes each. */
  fills: Buffer[];
  /**
   * The robot's row as the entry was built (undefined: no such robot). Any change to the row drops the entry,
   * so its key tells whether a waiting poll's token still holds and its labels whether a selector touches it,
   * without a query.
   */
  record: Robot | undefined;
  /** The robot's bound enclaves (`keystore\0path`, sorted, one per line), revoked ones included: the content's key. */
  targets: string;
}

type Outcome = { kind: 'changed'; entry: CacheEntry } | { kind: 'timeout' } | { kind: 'gone' };

interface Waiter {
  keyId: string;
  /** The revision the robot holds: a poll is answered when it differs; a watch moves it on with each bundle. */
  known: string;
  /** A watch (see `BundlesService.watch`): each new bundle goes here and the waiter stays until it times out. */
  stream?: (entry: CacheEntry) => void;
  done: (outcome: Outcome) => void;
}

const deliveryEvent = (entry: CacheEntry): AuditEvent => ({
  actor: entry.robot,
  actorKind: 'robot',
  action: 'bundle.deliver',
  target: entry.robot,
  details: { revision: entry.revision, enclaves: entry.content.summary },
});

const MAX_WAIT_S = 60;
const CLOSE = Buffer.from('}');
/** Event-loop time one fan-out step may take before other requests get their turn. */
const FAN_OUT_SLICE_MS = 10;
/**
 * Robots one fan-out step may answer, whatever the time it took. Waking a robot whose entry a rotation left with
 * its bound set is a few microseconds, but what it releases runs after the step, outside its clock: the
 * delivery's audit commit, the answer's TLS write, the robot's next poll. Uncapped, a 10 ms step woke 120–330
 * robots at 2,000, and `/health` waited up to 340 ms behind what followed; at 24, under 90 ms.
 */
const FAN_OUT_SLICE_ROBOTS = 24;
/**
 * Long polls one robot may hold at once. An agent needs one (two while it reconnects); a stolen token must not
 * park thousands of requests. A newer poll answers the oldest (304), so a reconnecting agent is never refused.
 */
export const MAX_WAITERS_PER_ROBOT = 2;
/**
 * Robots a fan-out step answers at once: enough to keep a PostgreSQL pool busy while one robot's reads are on
 * the wire, few enough to leave connections for everything else.
 */
const FAN_OUT_CONCURRENCY = 8;

/**
 * Bundles: what each robot may hold now. Computed once per change and cached per robot; a request reads
 * the cache (a hit costs no query). Long polls park a callback (no CPU while waiting) and are answered as soon
 * as a change touching that robot produces a new revision. Changes come from `store.changes`: the change log
 * as this replica follows it, so a change made on another replica reaches the robots waiting here too.
 *
 * Builds read the database, so they are asynchronous: concurrent misses for one robot (or one shared content)
 * share one build, and a change heard while a build is under way drops that build (it may have read rows the
 * change replaced): its callers get it once, the cache never keeps it.
 */
export class BundlesService {
  private readonly cache = new Map<string, CacheEntry>();
  /**
   * Entries a keystore or enclave change made stale: their content is outdated, but the robot's row and the
   * enclaves bound to it still hold, since every change to those is a robot or bindings change (deletes tell
   * their cascaded bindings, see `publishCascadedBindings`). A rotation reaching ten thousand waiting robots
   * thus rebuilds one shared content, and each robot's entry from it without a query of its own. Only those
   * two are kept, not the outdated content.
   */
  private readonly stale = new Map<string, Pick<CacheEntry, 'record' | 'targets'>>();
  /** Builds under way, by robot: every concurrent miss waits for the same one. */
  private readonly building = new Map<string, Promise<CacheEntry>>();
  /** Shared contents by their sorted target list. */
  private readonly contents = new Map<string, Content>();
  private readonly contentBuilds = new Map<string, Promise<Content>>();
  /**
   * Counts changes to keystores and enclaves: a shared content or enclave JSON built while it moved is handed
   * out once and not kept.
   */
  private contentEpoch = 0;
  /**
   * Each enclave's serialized `{path,notAfter,files}` (key unsealed once), shared by every robot bound to
   * it: a change that touches a thousand robots costs a thousand cheap assemblies, not a thousand unseals.
   */
  private readonly enclaveJson = new Map<string, SharedJson | PerRobotJson | null>();
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** The revision last delivered to each robot: a delivery is audited once per robot and revision. */
  private readonly delivered = new Map<string, string>();
  private readonly unsubscribe: () => void;
  /** Waiting robots whose bundle may have changed, answered a time slice at a time (see `drain`). */
  private readonly pending = new Set<string>();
  private draining = false;
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly bindings: BindingsService,
    private readonly sealer: Sealer,
    private readonly audit: AuditService,
    private readonly now: () => Date = () => new Date(),
    private readonly reportsLaterFrom = DEFAULT_REPORTS_LATER_FROM,
  ) {
    this.unsubscribe = store.changes.subscribe((c) => this.onChange(c));
  }

  /**
   * Whether an answer with a new bundle should ask the robot to report on its next contact (its next poll's
   * answer, within a poll's wait) rather than at once. The agent reports after every bundle that changed, so
   * a rotation reaching N waiting robots brings N reports into the fan-out itself: a third of its server CPU
   * (measured at 10,000 robots), and the robots' too. Deferred, each report leaves the rotation's critical
   * window, rides the connection the robot already holds, and one report covers any change that comes
   * before it. The price is an inventory up to a poll's wait behind, only for fleets this size.
   */
  reportsLater(): boolean {
    return this.waiters.size >= this.reportsLaterFrom;
  }

  close(): void {
    this.closed = true;
    this.pending.clear();
    this.unsubscribe();
    for (const set of this.waiters.values()) for (const w of set) w.done({ kind: 'timeout' });
    this.waiters.clear();
    this.building.clear();
    this.contentBuilds.clear();
  }

  /** The robot's current bundle: from the cache when nothing changed since it was built, else built once. */
  current(robot: string): Promise<CacheEntry> {
    const hit = this.cache.get(robot);
    if (hit) return Promise.resolve(hit);
    const underWay = this.building.get(robot);
    if (underWay) return underWay;
    const held = this.stale.get(robot);
    const build: Promise<CacheEntry> = this.store
      .read((r) => (held ? this.assemble(r, robot, held.record, held.targets) : this.compute(r, robot)))
      .then(
        (entry) => {
          // A change heard meanwhile took the build out of `building`: handed out once, not kept.
          if (this.building.get(robot) === build) {
            this.building.delete(robot);
            if (!this.closed) {
              this.cache.set(robot, entry);
              this.stale.delete(robot);
            }
          }
          return entry;
        },
        (err: unknown) => {
          if (this.building.get(robot) === build) this.building.delete(robot);
          throw err;
        },
      );
    this.building.set(robot, build);
    return build;
  }

  /**
   * The robot's row as the bundle cache holds it (see `CacheEntry.record`): the bundle fast path's token check
   * costs no query on a hit, and it builds the entry it is about to answer with anyway.
   */
  async robot(name: string): Promise<Robot | undefined> {
    return (await this.current(name)).record;
  }

  /**
   * Resolves with the bundle when its revision differs from `known`, or with null after `waitSeconds`
   * (or at once when `waitSeconds` is 0 and nothing changed).
   */
  async wait(robot: string, keyId: string, known: string | undefined, waitSeconds: number, signal?: AbortSignal): Promise<CacheEntry | null | 'gone'> {
    const entry = await this.current(robot);
    if (known === undefined || entry.revision !== known) return entry;
    if (waitSeconds <= 0) return null;
    const outcome = await this.park(robot, entry, { keyId, known }, waitSeconds, signal);
    return outcome.kind === 'changed' ? outcome.entry : outcome.kind === 'gone' ? 'gone' : null;
  }

  /**
   * A watch: hands `onBundle` the robot's bundle at once when its revision differs from `known`, then every
   * new revision for `seconds`, and resolves when that time is up, the client went away (`signal`), a newer
   * poll of the robot took its place, or the robot's enrollment changed ('gone'). Unlike a poll, a delivery does
   * not end it: the robot's next request comes when the watch ends, not right behind each delivery.
   */
  async watch(robot: string, keyId: string, known: string | undefined, seconds: number, onBundle: (entry: CacheEntry) => void, signal?: AbortSignal): Promise<'timeout' | 'gone'> {
    const entry = await this.current(robot);
    if (!entry.record || entry.record.keyId !== keyId) return 'gone';
    if (entry.revision !== known) onBundle(entry);
    const outcome = await this.park(robot, entry, { keyId, known: entry.revision, stream: onBundle }, seconds, signal);
    return outcome.kind === 'gone' ? 'gone' : 'timeout';
  }

  /** Parks a poll or a watch for `robot`, whose entry was `entry` when its caller looked. */
  private park(robot: string, entry: CacheEntry, w: Omit<Waiter, 'done'>, seconds: number, signal: AbortSignal | undefined): Promise<Outcome> {
    return new Promise((resolve) => {
      const held = this.waiters.get(robot);
      // Oldest first (a Set iterates in insertion order).
      while (held && held.size >= MAX_WAITERS_PER_ROBOT) held.values().next().value!.done({ kind: 'timeout' });
      let set = this.waiters.get(robot);
      if (!set) this.waiters.set(robot, (set = new Set()));
      const timer = setTimeout(() => waiter.done({ kind: 'timeout' }), Math.min(seconds, MAX_WAIT_S) * 1000);
      const waiter: Waiter = {
        ...w,
        done: (outcome) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          set!.delete(waiter);
          if (set!.size === 0) this.waiters.delete(robot);
          resolve(outcome);
        },
      };
      // The robot gave up waiting (its connection closed): forget this poll, not the robot's others.
      const onAbort = () => waiter.done({ kind: 'timeout' });
      set.add(waiter);
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      // A change heard between the build and now dropped the entry before this poll was parked, so it did not
      // count this robot as waiting: look again.
      if (this.cache.get(robot) !== entry) {
        this.pending.add(robot);
        this.schedule();
      }
    });
  }

  /**
   * The bytes sent for `entry`, in order: a small per-robot head, then the shared serialized content with this
   * robot's fills (its certificates) between its segments. Written as they are (not concatenated): ten thousand
   * deliveries would otherwise each copy the bundle once more into a buffer of its own for the garbage collector.
   */
  parts(entry: CacheEntry): Piece[] {
    const head = `{"revision":"${entry.revision}","robot":${JSON.stringify(entry.robot)},"keystores":`;
    const { content } = entry;
    const segment = (i: number): Piece => ({ raw: content.segments[i]!, deflated: () => this.deflated(content)[i]! });
    const parts: Piece[] = [{ raw: Buffer.from(head) }, segment(0)];
    for (let i = 0; i < entry.fills.length; i++) parts.push({ raw: entry.fills[i]! }, segment(i + 1));
    parts.push({ raw: CLOSE });
    return parts;
  }

  private deflated(content: Content): Buffer[] {
    return (content.deflated ??= content.segments.map((seg, i) => deflateAround(seg, content.secrets[i]!)));
  }

  /**
   * The bundle a robot's login answers with (`POST /v1/auth/robot` with `bundle: true`, see `LoginExtra`): read
   * before the login's unit of work, its delivery audited inside it, so a boot is one commit. Undefined when
   * the robot's enrollment is no longer the one the login was checked against (deleted, re-enrolled or its key
   * revoked in between): the same test a bundle request's token passes.
   */
  readonly atLogin = {
    prepare: async (robot: string, ver: string): Promise<CacheEntry | undefined> => {
      const entry = await this.current(robot);
      return entry.record?.keyId && robotTokenVersion(entry.record) === ver ? entry : undefined;
    },
    write: async (r: Repos, entry: CacheEntry | undefined): Promise<void> => {
      if (entry && this.delivered.get(entry.robot) !== entry.revision) await this.audit.record(r, deliveryEvent(entry));
    },
    reportsLater: (): boolean => this.reportsLater(),
    /** Once the login committed: the delivery is recorded, the answer's bytes. */
    answer: (entry: CacheEntry): Piece[] => {
      this.delivered.set(entry.robot, entry.revision);
      return this.parts(entry);
    },
  };

  /** Audits a delivery the first time a robot receives a revision (not every poll that re-sends it). */
  async recordDelivery(robot: string, entry: CacheEntry): Promise<void> {
    if (this.delivered.get(robot) === entry.revision) return;
    this.delivered.set(robot, entry.revision);
    try {
      await this.audit.recordAlone(deliveryEvent(entry));
    } catch (err) {
      // Not recorded: the next delivery of this revision tries again.
      if (this.delivered.get(robot) === entry.revision) this.delivered.delete(robot);
      throw err;
    }
  }

  /**
   * Drops what a change makes stale at once (so the next request sees it), then answers the affected waiting
   * robots off this call stack: the request that made the change returns without paying for the fan-out.
   */
  private onChange(change: Change): void {
    if (change.kind === 'robot') {
      // One robot's change (its certificate, labels or key) touches its own entry only. Looked up, not found by
      // walking every cached robot: in a boot storm each robot's certificate request is such a change, and a
      // walk per request over ten thousand entries would cost more than the requests themselves.
      this.delivered.delete(change.robot);
      this.cache.delete(change.robot);
      this.stale.delete(change.robot);
      this.building.delete(change.robot);
      if (this.waiters.has(change.robot)) this.pending.add(change.robot);
      this.schedule();
      return;
    }
    // A build under way cannot be told whether it is touched (it has no content yet): none of them is kept.
    if (change.kind === 'bindings' && change.robot !== undefined) this.building.delete(change.robot);
    else this.building.clear();
    if (change.kind === 'resync') {
      this.stale.clear();
      this.contentEpoch++;
      this.contentBuilds.clear();
      this.enclaveJson.clear();
      this.contents.clear();
    } else if (change.kind === 'keystore') {
      this.contentEpoch++;
      this.contentBuilds.clear();
      for (const key of this.enclaveJson.keys()) if (key.startsWith(`${change.keystore}\0`)) this.enclaveJson.delete(key);
      for (const [key, c] of this.contents) if (c.keystores.has(change.keystore)) this.contents.delete(key);
    } else if (change.kind === 'enclave') {
      this.contentEpoch++;
      this.contentBuilds.clear();
      this.enclaveJson.delete(`${change.keystore}\0${change.enclave}`);
      const id = `${change.keystore}:${change.enclave}`;
      for (const [key, c] of this.contents) if (c.enclaves.has(id)) this.contents.delete(key);
    }
    const contentOnly = change.kind === 'keystore' || change.kind === 'enclave';
    for (const [robot, entry] of this.cache) {
      if (this.touches(change, robot, entry)) {
        this.cache.delete(robot);
        if (contentOnly) this.stale.set(robot, { record: entry.record, targets: entry.targets });
        if (this.waiters.has(robot)) this.pending.add(robot);
      }
    }
    if (change.kind === 'bindings') for (const [robot, entry] of this.stale) if (this.touchesRobot(change, robot, entry)) this.stale.delete(robot);
    // A waiting robot without a cache entry lost it to an earlier change still being answered: include it.
    for (const robot of this.waiters.keys()) if (!this.cache.has(robot)) this.pending.add(robot);
    this.schedule();
  }

  private schedule(): void {
    if (this.draining || this.closed || this.pending.size === 0) return;
    this.draining = true;
    setImmediate(() => void this.drain());
  }

  /**
   * Answers pending robots, a few at a time, for at most one slice of event-loop time (or of robots), then
   * yields: /health, logins and other requests interleave with a fan-out to thousands of robots (on SQLite every
   * read completes at once, so without the slice a fan-out would never let go of the loop). Each robot costs a
   * lookup of its cache entry, rebuilt when the change dropped it: from its kept bound set after a keystore or
   * enclave change, else a few indexed reads; its shared content is built once per distinct set of enclaves.
   */
  private async drain(): Promise<void> {
    try {
      let until = performance.now() + FAN_OUT_SLICE_MS;
      let woken = 0;
      while (this.pending.size > 0 && !this.closed) {
        const batch: string[] = [];
        for (const robot of this.pending) {
          this.pending.delete(robot);
          batch.push(robot);
          if (batch.length >= FAN_OUT_CONCURRENCY) break;
        }
        await Promise.all(batch.map((robot) => this.wake(robot)));
        woken += batch.length;
        if (performance.now() >= until || woken >= FAN_OUT_SLICE_ROBOTS) {
          await new Promise((resolve) => setImmediate(resolve));
          until = performance.now() + FAN_OUT_SLICE_MS;
          woken = 0;
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async wake(robot: string): Promise<void> {
    if (!this.waiters.get(robot)?.size) return;
    let entry: CacheEntry;
    try {
      entry = await this.current(robot);
    } catch {
      // The store failed (PostgreSQL away): the polls are answered as unchanged and come back, to a 503 while
      // it stays away; agents keep what they hold and retry.
      for (const w of [...(this.waiters.get(robot) ?? [])]) w.done({ kind: 'timeout' });
      return;
    }
    for (const w of [...(this.waiters.get(robot) ?? [])]) {
      if (!entry.record || entry.record.keyId !== w.keyId) w.done({ kind: 'gone' });
      else if (entry.revision !== w.known) {
        if (!w.stream) w.done({ kind: 'changed', entry });
        else {
          w.known = entry.revision;
          w.stream(entry);
        }
      }
    }
  }

  private touches(change: Change, robot: string, entry: CacheEntry): boolean {
    switch (change.kind) {
      case 'keystore':
        return entry.content.keystores.has(change.keystore);
      case 'enclave':
        return entry.content.enclaves.has(`${change.keystore}:${change.enclave}`);
      default:
        return this.touchesRobot(change, robot, entry);
    }
  }

  private touchesRobot(change: Change, robot: string, entry: Pick<CacheEntry, 'record'>): boolean {
    switch (change.kind) {
      case 'resync':
        return true;
      case 'bindings': {
        if (change.robot !== undefined) return change.robot === robot;
        if (change.selector !== undefined) return !entry.record || selectorMatches(change.selector, entry.record.labels);
        return true;
      }
      default:
        return false;
    }
  }

  private async compute(r: Repos, robot: string): Promise<CacheEntry> {
    const record = await r.robots.get(robot);
    const bound = record ? await this.bindings.enclavesFor(r, robot, record.labels) : [];
    return this.assemble(
      r,
      robot,
      record,
      bound
        .map((t) => `${t.keystore}\0${t.enclave}`)
        .sort()
        .join('\n'),
    );
  }

  /** The robot's entry from its row and bound enclaves: the shared content (built once) and its own fills. */
  private async assemble(r: Repos, robot: string, record: Robot | undefined, targets: string): Promise<CacheEntry> {
    const content = await this.contentFor(r, targets);
    const fills: Buffer[] = [];
    for (const h of content.holes) fills.push(await this.fill(r, robot, h));
    const hash = crypto.createHash('sha256').update(robot).update('\n').update(content.hash);
    for (const f of fills) hash.update('\n').update(f);
    return { revision: hash.digest('hex').slice(0, 32), robot, content, fills, record, targets };
  }

  /** The robot's own part of a per-robot enclave: its latest live certificate, or none yet. */
  private async fill(r: Repos, robot: string, h: Hole): Promise<Buffer> {
    const id = await r.identities.current(robot, h.keystore, h.path);
    if (!id || new Date(id.not_after).getTime() <= this.now().getTime()) return Buffer.from(`"notAfter":${JSON.stringify(h.caNotAfter)},"files":{`);
    return Buffer.from(
      `"notAfter":${JSON.stringify(id.not_after)},"identitySerial":${JSON.stringify(serialOut(id.serial))},"files":{"cert.pem":${JSON.stringify(id.cert_pem)},`,
    );
  }

  /** The shared content for `targets` (see `CacheEntry.targets`), built on first use (once, however many ask). */
  private contentFor(r: Repos, id: string): Promise<Content> {
    const known = this.contents.get(id);
    if (known) return Promise.resolve(known);
    const underWay = this.contentBuilds.get(id);
    if (underWay) return underWay;
    const epoch = this.contentEpoch;
    const build: Promise<Content> = this.buildContent(r, id === '' ? [] : id.split('\n'), epoch).then(
      (content) => {
        if (this.contentBuilds.get(id) === build) this.contentBuilds.delete(id);
        if (epoch === this.contentEpoch && !this.closed) {
          // Contents no cached robot uses any more (a robot's bindings changed) are swept once they outnumber the rest.
          if (this.contents.size >= 2 * this.cache.size + 64) this.sweepContents();
          this.contents.set(id, content);
        }
        return content;
      },
      (err: unknown) => {
        if (this.contentBuilds.get(id) === build) this.contentBuilds.delete(id);
        throw err;
      },
    );
    this.contentBuilds.set(id, build);
    return build;
  }

  private async buildContent(r: Repos, targets: string[], epoch: number): Promise<Content> {
    const segments: string[] = [];
    const holes: Hole[] = [];
    /** Private keys in each segment (string offsets), the current one's last. */
    const keys: [number, number][][] = [[]];
    let current = '[';
    const keystores = new Set<string>();
    const enclaveKeys = new Set<string>();
    const summary: string[] = [];
    let i = 0;
    let firstKeystore = true;
    while (i < targets.length) {
      const name = targets[i]!.slice(0, targets[i]!.indexOf('\0'));
      keystores.add(name);
      let ks: KeystoreRow | undefined;
      const enclaves: { path: string; json: SharedJson | PerRobotJson }[] = [];
      for (; i < targets.length && targets[i]!.startsWith(`${name}\0`); i++) {
        const key = targets[i]!;
        const path = key.slice(name.length + 1);
        // Bound-but-revoked enclaves are tracked too, so a change to them reaches this robot.
        enclaveKeys.add(`${name}:${path}`);
        let json = this.enclaveJson.get(key);
        if (json === undefined) {
          ks ??= await r.keystores.get(name);
          const row = ks && (await r.keystores.getEnclave(name, path));
          json = ks && row && row.status === 'active' ? this.enclaveJsonOf(ks, row) : null;
          if (epoch === this.contentEpoch) this.enclaveJson.set(key, json);
        }
        if (json === null) continue;
        enclaves.push({ path, json });
        summary.push(`${name}:${path}`);
      }
      if (enclaves.length === 0) continue;
      current += `${firstKeystore ? '' : ','}{"name":${JSON.stringify(name)},"enclaves":[`;
      firstKeystore = false;
      enclaves.forEach(({ path, json }, n) => {
        if (n > 0) current += ',';
        if ('text' in json) {
          keys.at(-1)!.push([current.length + json.key[0], current.length + json.key[1]]);
          current += json.text;
          return;
        }
        segments.push(current + json.head);
        holes.push({ keystore: name, path, caNotAfter: json.caNotAfter });
        keys.push([]);
        current = json.tail;
      });
      current += ']}';
    }
    segments.push(`${current}]`);
    const bytes = segments.map((seg) => Buffer.from(seg));
    // Offsets in bytes: the same as in characters unless something before a key is not ASCII.
    const secrets = keys.map((spans, n) => spans.map(([a, b]): [number, number] => [Buffer.byteLength(segments[n]!.slice(0, a)), Buffer.byteLength(segments[n]!.slice(0, b))]));
    const hash = crypto.createHash('sha256');
    bytes.forEach((b, n) => {
      if (n > 0) hash.update(`\0${holes[n - 1]!.keystore}\0${holes[n - 1]!.path}\0`);
      hash.update(b);
    });
    return {
      segments: bytes,
      secrets,
      holes,
      hash: hash.digest('hex'),
      keystores,
      enclaves: enclaveKeys,
      summary,
    };
  }

  private sweepContents(): void {
    const used = new Set<Content>();
    for (const e of this.cache.values()) used.add(e.content);
    for (const [key, c] of this.contents) if (!used.has(c)) this.contents.delete(key);
  }

  private enclaveJsonOf(ks: KeystoreRow, e: EnclaveRow): SharedJson | PerRobotJson {
    if (e.identity_mode === 'shared') {
      const enclave = this.enclaveFiles(ks, e);
      const text = JSON.stringify(enclave);
      const key = `"key.pem":${JSON.stringify(enclave.files['key.pem'])}`;
      const at = text.indexOf(key);
      return { text, key: [at, at + key.length] };
    }
    // Per-robot: the shared files without cert.pem and key.pem (the server has no key; the certificate is
    // each robot's own). The robot's part goes between head and tail.
    const files: Record<string, string> = {
      'identity_ca.cert.pem': ks.identity_ca_cert,
      'permissions_ca.cert.pem': ks.permissions_ca_cert,
      'governance.p7s': ks.governance_p7s,
      'permissions.p7s': e.permissions_p7s,
    };
    if (ks.crl_pem) files['crl.pem'] = ks.crl_pem;
    const filesJson = JSON.stringify(files);
    return {
      head: `{"path":${JSON.stringify(e.path)},"identity":"per-robot",`,
      // The robot's part opens `files` ("files":{ ... ,), so the shared files follow without their brace.
      tail: `${filesJson.slice(1)}}`,
      caNotAfter: inspectCertificate(ks.identity_ca_cert).notAfter.toISOString(),
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
