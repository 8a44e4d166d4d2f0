import type { Refusal } from '../errors.js';
import type { ActorKind, AuditService } from './audit.service.js';

export interface RefusalLogOptions {
  /** Repeats of the same refusal inside one window become one summary entry. */
  windowMs: number;
  /** Distinct refusals one actor may add per window before the rest are only counted. */
  maxDistinctPerActor: number;
}

interface Pending {
  actor: string;
  actorKind: ActorKind;
  action: string;
  target?: string;
  reason: string;
  /** Refusals seen since the entry was written, not yet in the log. */
  repeats: number;
}

const OVERFLOW = '\0overflow';

/** `enclave.bind`, `keystore.create`: the audit vocabulary for a capability that was refused. */
export function refusedAction(capability: string): string {
  return capability.includes(':') ? capability.replace(':', '.') : `enclave.${capability}`;
}

/**
 * Refused attempts in the audit log, bounded. The first refusal of a kind (actor, action, target, reason) in a
 * window is written at once; its repeats are counted and written as one entry with `repeated: N` when the
 * window closes. An actor who varies the target gets at most `maxDistinctPerActor` entries a window, then one
 * entry counting the rest: a flood of refused requests cannot grow the log faster than that.
 */
export class RefusalLog {
  private pending = new Map<string, Pending>();
  private distinct = new Map<string, number>();
  private windowEnd: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly audit: AuditService,
    private readonly now: () => number,
    private readonly opts: RefusalLogOptions = { windowMs: 60_000, maxDistinctPerActor: 100 },
    /** Where an entry that could not be written is reported (the database may be down); nothing is thrown. */
    private readonly onError: (err: unknown) => void = () => {},
  ) {
    this.windowEnd = now() + opts.windowMs;
    this.timer = setInterval(() => void this.flush().catch(this.onError), opts.windowMs).unref();
  }

  /**
   * Resolves once the entry (if this refusal gets one now) is in the log; never rejects: the caller is answering
   * the refusal, and a database that cannot take the entry must not turn that answer into another one.
   */
  async record(actor: string, actorKind: ActorKind, refusal: Refusal, request: string): Promise<void> {
    try {
      await this.count(actor, actorKind, refusal, request);
    } catch (err) {
      this.onError(err);
    }
  }

  private async count(actor: string, actorKind: ActorKind, refusal: Refusal, request: string): Promise<void> {
    if (this.now() >= this.windowEnd) await this.flush();
    const action = refusedAction(refusal.capability);
    const key = JSON.stringify([actor, action, refusal.target ?? null, refusal.reason]);
    const seen = this.pending.get(key) ?? this.pending.get(`${actor}${OVERFLOW}`);
    if (seen) {
      seen.repeats++;
      return;
    }
    const count = this.distinct.get(actor) ?? 0;
    if (count >= this.opts.maxDistinctPerActor) {
      this.pending.set(`${actor}${OVERFLOW}`, { actor, actorKind, action: 'access.denied', reason: 'too-many-refusals', repeats: 1 });
      return;
    }
    this.distinct.set(actor, count + 1);
    this.pending.set(key, { actor, actorKind, action, target: refusal.target, reason: refusal.reason, repeats: 0 });
    await this.audit.recordAlone({ actor, actorKind, action, target: refusal.target, result: 'denied', details: { reason: refusal.reason, request } });
  }

  /** Writes the counted repeats and starts a new window. */
  async flush(): Promise<void> {
    const windowSeconds = Math.round(this.opts.windowMs / 1000);
    // The window is swapped before anything is written: refusals arriving meanwhile count in the new one,
    // and a second flush cannot write the same repeats again.
    const closing = this.pending;
    this.pending = new Map();
    this.distinct = new Map();
    this.windowEnd = this.now() + this.opts.windowMs;
    for (const p of closing.values()) {
      if (p.repeats === 0) continue;
      await this.audit.recordAlone({
        actor: p.actor,
        actorKind: p.actorKind,
        action: p.action,
        target: p.target,
        result: 'denied',
        details: { reason: p.reason, repeated: p.repeats, windowSeconds },
      });
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
