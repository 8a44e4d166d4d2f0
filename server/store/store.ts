import { AuditRepo } from '../audit/audit.repo.js';
import { ThrottleRepo } from '../auth/throttle.repo.js';
import { BindingsRepo } from '../bindings/bindings.repo.js';
import { appendChange, ChangeFollower, type FollowerOptions } from '../events/change-log.js';
import { ChangeFeed, type Change } from '../events/changes.js';
import { GrantsRepo } from '../grants/grants.repo.js';
import { IdentitiesRepo } from '../identities/identities.repo.js';
import { KeystoresRepo } from '../keystores/keystores.repo.js';
import { RobotsRepo } from '../robots/robots.repo.js';
import { UsersRepo } from '../users/users.repo.js';
import type { MigrationResult } from '../db/database.js';
import type { Database, Sql } from './sql.js';

/**
 * Every domain's repository over one connection: what a unit of work sees. Repositories are plain objects over
 * `Sql`, made per unit of work (they hold no statement handles), so on PostgreSQL they run on the connection
 * that holds the transaction.
 */
export interface Repos {
  readonly sql: Sql;
  readonly audit: AuditRepo;
  readonly bindings: BindingsRepo;
  readonly grants: GrantsRepo;
  readonly identities: IdentitiesRepo;
  readonly keystores: KeystoresRepo;
  readonly robots: RobotsRepo;
  readonly throttles: ThrottleRepo;
  readonly users: UsersRepo;
  /**
   * Records a change in the change log inside this unit of work: it commits with the data or not at all, and
   * reaches every replica's ChangeFeed (this one's before `tx` returns). Refused in `read`.
   */
  publish(change: Change): Promise<void>;
}

function reposOver(sql: Sql, publish: (change: Change) => Promise<void>): Repos {
  return {
    sql,
    audit: new AuditRepo(sql),
    bindings: new BindingsRepo(sql),
    grants: new GrantsRepo(sql),
    identities: new IdentitiesRepo(sql),
    keystores: new KeystoresRepo(sql),
    robots: new RobotsRepo(sql),
    throttles: new ThrottleRepo(sql),
    users: new UsersRepo(sql),
    publish,
  };
}

interface Member {
  fn: (r: Repos) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** Bounds one transaction (and the write lock it holds) however many units wait. */
const MAX_GROUP = 200;

async function settle(member: Member, run: () => Promise<unknown>): Promise<void> {
  try {
    member.resolve(await run());
  } catch (err) {
    member.reject(err);
  }
}

const readOnly = async (): Promise<void> => {
  throw new Error('a change can only be published inside store.tx');
};

/**
 * The one way services reach storage, whatever the engine. `tx` is a unit of work (see Database.tx: writes run
 * one at a time, a rule checked inside still holds at commit; the function does database work only, nothing
 * that waits on the network, a worker or a timer). `read` sees the last commit and never waits for a writer.
 *
 * Changes published in a unit of work go through the change log: the local ChangeFeed hears them from the
 * ChangeFollower, exactly as every other replica does, so there is one path for one process and for many.
 */
export class Store {
  readonly changes = new ChangeFeed();
  private readonly follower: ChangeFollower;
  private readonly clock: () => Date;
  private waiting: Member[] = [];
  private grouping = false;

  private readonly onPublished: () => void;

  constructor(
    readonly db: Database,
    options: {
      now?: () => Date;
      follower?: FollowerOptions;
      /**
       * After a unit of work that published changes has committed. Processes sharing one SQLite file (`--workers`)
       * tell each other through it; on PostgreSQL the commit's NOTIFY does that.
       */
      onPublished?: () => void;
    } = {},
  ) {
    this.clock = options.now ?? (() => new Date());
    this.follower = new ChangeFollower(db, this.changes, options.follower);
    this.onPublished = options.onPublished ?? (() => {});
  }

  get dialect(): Database['dialect'] {
    return this.db.dialect;
  }

  /** Migrates, then follows the change log from its current end. */
  async start(): Promise<MigrationResult> {
    const result = await this.db.migrate();
    await this.follower.start();
    return result;
  }

  async tx<T>(fn: (r: Repos) => Promise<T>): Promise<T> {
    let published = false;
    const result = await this.db.tx((sql) =>
      fn(
        reposOver(sql, async (change) => {
          published = true;
          await appendChange(sql, change, this.clock().toISOString());
        }),
      ),
    );
    // Read-your-writes on this replica: its caches have heard the change before the request that made it answers.
    if (published) {
      this.onPublished();
      await this.follower.wake();
    }
    return result;
  }

  /** Another process committed changes: read the change log now, not at the next poll. */
  wake(): Promise<void> {
    return this.follower.wake();
  }

  /**
   * A unit of work committed together with the others asked for in the same turn of the event loop, or while
   * the previous group was committing (group commit). For the caller it means what `tx` means: `fn`'s writes
   * commit or not at all, and its result or error is its own. Members run one after another in one
   * transaction, so each sees the writes of those before it, as if each were a `tx` of its own in that order.
   * When a member throws, the group rolls back and every member runs again in a transaction of its own: one
   * member's failure costs the others a second run, never their writes (so `fn`, as for `tx`, does database
   * work only). Meant for the small units a boot storm makes by the thousand (robot logins, first deliveries,
   * certificates issued to robots), where the commit and the write lock cost more than the work: on
   * PostgreSQL, one lock and one commit for many; on SQLite, one WAL commit.
   */
  grouped<T>(fn: (r: Repos) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ fn, resolve: resolve as (value: unknown) => void, reject });
      if (!this.grouping) {
        this.grouping = true;
        // After the I/O of this turn: logins that arrived on other connections in the same poll join the group.
        setImmediate(() => void this.commitGroups());
      }
    });
  }

  private async commitGroups(): Promise<void> {
    try {
      while (this.waiting.length > 0) {
        const group = this.waiting.splice(0, MAX_GROUP);
        if (group.length === 1) {
          await settle(group[0]!, () => this.tx(group[0]!.fn));
          continue;
        }
        let results: unknown[];
        try {
          results = await this.tx(async (r) => {
            const out: unknown[] = [];
            for (const member of group) out.push(await member.fn(r));
            return out;
          });
        } catch {
          // Which member failed, and whether it fails alone, only a run of its own tells. One after another, in the
          // order asked: run side by side (PostgreSQL's pool), two members that conflict could commit the later one.
          for (const member of group) await settle(member, () => this.tx(member.fn));
          continue;
        }
        group.forEach((member, i) => member.resolve(results[i]));
      }
    } finally {
      this.grouping = false;
    }
  }

  read<T>(fn: (r: Repos) => Promise<T>): Promise<T> {
    return this.db.read((sql) => fn(reposOver(sql, readOnly)));
  }

  async close(): Promise<void> {
    // Units already asked for commit (or fail) before the connections go.
    while (this.grouping) await new Promise((resolve) => setImmediate(resolve));
    await this.follower.close();
    await this.db.close();
  }
}
