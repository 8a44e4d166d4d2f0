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

  constructor(
    readonly db: Database,
    options: { now?: () => Date; follower?: FollowerOptions } = {},
  ) {
    this.clock = options.now ?? (() => new Date());
    this.follower = new ChangeFollower(db, this.changes, options.follower);
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
    if (published) await this.follower.wake();
    return result;
  }

  read<T>(fn: (r: Repos) => Promise<T>): Promise<T> {
    return this.db.read((sql) => fn(reposOver(sql, readOnly)));
  }

  async close(): Promise<void> {
    await this.follower.close();
    await this.db.close();
  }
}
