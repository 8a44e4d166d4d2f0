/**
 * A fresh PostgreSQL database per measured configuration, on a server where the given role may CREATE
 * DATABASE (e.g. scripts/postgres-throwaway.sh's cluster): every configuration starts from an empty schema,
 * so the second one does not inherit the first one's robots, change log or audit chain.
 */
import pg from 'pg';
import { createDatabase } from '../../test/helpers/postgres.js';
import { cpuMs } from './stats.js';

export interface BenchDatabase {
  /** The database's URL without its password (the servers read that from `password`'s file). */
  url: string;
  /** The password the base URL carried ('' if none). */
  password: string;
  name: string;
  drop(): Promise<void>;
}

/** Checks that `baseUrl` is a PostgreSQL URL and reachable; the message names the problem, never the password. */
export async function checkDatabaseUrl(baseUrl: string): Promise<void> {
  let u: URL;
  try {
    u = new URL(baseUrl);
  } catch {
    throw new Error('--database-url is not a URL (postgres://user:password@host:port/db)');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new Error(`--database-url must be postgres://…, not ${u.protocol}//…`);
  const c = new pg.Client({ connectionString: baseUrl });
  try {
    await c.connect();
    await c.query('SELECT 1');
  } catch (err) {
    throw new Error(`cannot reach the PostgreSQL server at ${u.hostname}:${u.port || 5432}: ${(err as Error).message}`);
  } finally {
    await c.end().catch(() => {});
  }
}

export async function createBenchDatabase(baseUrl: string, label: string): Promise<BenchDatabase> {
  const database = await createDatabase(baseUrl, 'bench', label);
  // The servers read the password from a file: the URL they get carries none.
  const u = new URL(database.url);
  const password = decodeURIComponent(u.password);
  u.password = '';
  return { url: u.toString(), password, name: database.name, drop: database.drop };
}

/**
 * CPU spent by the PostgreSQL backends serving one database (the replicas' pooled connections), from
 * /proc/<pid>/stat of the pids pg_stat_activity names: PostgreSQL runs on this machine and competes for the
 * same cores. Sampled every `everyMs` because pooled connections come and go (pg closes one idle for 10 s):
 * what a backend spent after its last sample before it exited is missed, so the figure is a lower bound.
 * Only this database's backends count, not other databases on a shared cluster nor its background workers.
 */
export class BackendCpu {
  private readonly latest = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private busy: Promise<void> | undefined;

  private constructor(private readonly client: pg.Client, private readonly database: string, everyMs: number) {
    this.timer = setInterval(() => void this.sample().catch(() => {}), everyMs);
    this.timer.unref();
  }

  static async start(baseUrl: string, database: string, everyMs = 250): Promise<BackendCpu> {
    const client = new pg.Client({ connectionString: baseUrl, application_name: 'bench-fleet-cpu' });
    await client.connect();
    return new BackendCpu(client, database, everyMs);
  }

  private sample(): Promise<void> {
    this.busy ??= (async () => {
      try {
        const r = await this.client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [this.database]);
        for (const { pid } of r.rows) {
          const ms = cpuMs(pid);
          if (ms > (this.latest.get(pid) ?? 0)) this.latest.set(pid, ms);
        }
      } finally {
        this.busy = undefined;
      }
    })();
    return this.busy;
  }

  /** CPU ms of every backend of the database seen so far (take the difference over a phase). */
  async totalMs(): Promise<number> {
    await this.sample().catch(() => {});
    let sum = 0;
    for (const v of this.latest.values()) sum += v;
    return sum;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.busy?.catch(() => {});
    await this.client.end().catch(() => {});
  }
}
