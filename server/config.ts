import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_OVERLOAD } from './http/overload.js';
import { DEFAULT_REPORTS_LATER_FROM } from './bundles/wire.js';

/** Typed server configuration, read once at start-up. A bad setting fails fast, naming the setting. */
export interface ServerConfig {
  dataDir: string;
  /**
   * PostgreSQL instead of the embedded SQLite file (`postgres://user@host/db`): what several replicas share.
   * The password is best given apart, in databasePasswordFile, so it is in no process listing.
   */
  databaseUrl?: string;
  databasePasswordFile?: string;
  listenHost: string;
  listenPort: number;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  insecureHttp: boolean;
  /** Proxies (addresses, CIDRs, `loopback`...) whose X-Forwarded-For names the client; empty: trust none. */
  trustProxy: string[];
  masterKeyFile?: string;
  tokenSecretFile?: string;
  adminUser: string;
  adminPassword?: string;
  /** Extra DNS names / IPs for the self-generated server certificate (LAN host names). */
  tlsSans: string[];
  tokenTtlSeconds: number;
  robotTokenTtlSeconds: number;
  logLevel: string;
  maxImportBytes: number;
  /** Event-loop lag (ms) above which robot logins and enrollments are answered 503 + Retry-After; 0: never. */
  overloadLagMs: number;
  /** TLS handshake wait (ms) that, for most of a second's connections, sheds them the same way; 0: never. */
  overloadQueueMs: number;
  /** From how many robots long-polling on this process a new bundle asks for the report on the next contact. */
  reportsLaterFrom: number;
  /** Time limit for reading one uploaded policy or governance document (ms). */
  xmlTimeLimitMs: number;
  /** Time limit for reading one uploaded sros2 keystore archive (ms). */
  importTimeLimitMs: number;
  /** A robot's previous per-robot certificate when it gets a new one: revoked (CRL) or left to expire. */
  identityReissue: 'revoke' | 'expire';
  identityValidityDays: number;
  /** Server processes sharing the port on this host (Node's cluster): 1 runs the server in this process. */
  workers: number;
  /** How often each process reads the change log when nothing woke it (ms); undefined: the store's default. */
  changePollMs?: number;
}

export class ConfigError extends Error {}

/** Far beyond any host's cores: each worker holds its own caches, sandbox threads and database connections. */
const MAX_WORKERS = 64;

export interface ParsedCommand {
  command: 'serve' | 'migrate' | 'backup' | 'help';
  args: string[];
  config: ServerConfig;
}

const HELP = `usage: enclave-server [serve] [options]
       enclave-server migrate [--data-dir DIR]
       enclave-server backup OUT [--data-dir DIR]

options (flag wins over environment):
  --data-dir DIR        ENCLAVE_DATA_DIR        data folder (default ./data)
  --database-url URL    ENCLAVE_DATABASE_URL    PostgreSQL (postgres://user@host:5432/db) instead of SQLite in
                                                the data folder; ENCLAVE_DATABASE_PASSWORD_FILE: its password
                                                (ENCLAVE_DATABASE_URL_FILE: the whole URL from a file)
  --listen HOST:PORT    ENCLAVE_LISTEN          (default 127.0.0.1:8443)
  --tls-cert FILE       ENCLAVE_TLS_CERT        PEM certificate (default: self-generated CA + certificate)
  --tls-key FILE        ENCLAVE_TLS_KEY         PEM private key for --tls-cert
  --tls-san NAME,...    ENCLAVE_TLS_SAN         extra host names/IPs for the self-generated certificate
  --insecure-http                               plain HTTP, only behind a TLS-terminating proxy
  --trust-proxy LIST    ENCLAVE_TRUST_PROXY     proxies whose X-Forwarded-For names the client (addresses,
                                                CIDRs, loopback, uniquelocal; comma-separated)
  --identity-reissue revoke|expire              ENCLAVE_IDENTITY_REISSUE: a robot's previous per-robot
                                                certificate on re-issue is revoked (default) or left to expire
  --identity-validity-days N                    ENCLAVE_IDENTITY_VALIDITY_DAYS: lifetime of per-robot
                                                certificates (default 0: the enclave's); agents renew at 2/3
  --workers N|auto      ENCLAVE_WORKERS         server processes sharing the port (default 1; auto: one per
                                                core); with SQLite they share the data folder's database
  ENCLAVE_CHANGE_POLL_MS                        how often a process reads the change log unprompted (default
                                                1000 on SQLite, 5000 on PostgreSQL; commits wake it anyway)
  ENCLAVE_MASTER_KEY_FILE                       32-byte master key (default <data>/master.key)
  ENCLAVE_TOKEN_SECRET_FILE                     32-byte token signing key (default <data>/jwt.secret)
  ENCLAVE_ADMIN_PASSWORD(_FILE)                 first admin's password (only when no user exists)
  ENCLAVE_LOG_LEVEL                             pino level (default info)
  ENCLAVE_OVERLOAD_LAG_MS                       event-loop lag that sheds robot logins with 503 (default 250, 0 off)
  ENCLAVE_OVERLOAD_QUEUE_MS                     wait for a TLS handshake that, for most connections of a second,
                                                sheds robot logins with 503 (default 1000, 0 off)
  ENCLAVE_REPORTS_LATER_FROM                    robots long-polling on this process from which agents are asked
                                                to report on their next contact, not at once (default 1000)
  ENCLAVE_XML_TIME_LIMIT_MS                     time to read one uploaded policy/governance (default 1500)
  ENCLAVE_IMPORT_TIME_LIMIT_MS                  time to read one keystore import (default 120000)`;

export const usage = (): string => HELP;

function secretFromEnv(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const file = env[`${name}_FILE`];
  if (file) {
    try {
      return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    } catch {
      throw new ConfigError(`${name}_FILE: cannot read ${file}`);
    }
  }
  return env[name] || undefined;
}

function positiveInt(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer`);
  return n;
}

export function parseListen(value: string, setting: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${setting}: expected HOST:PORT, got "${value}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const PROXY = /^(loopback|linklocal|uniquelocal|[0-9.]+(\/\d{1,2})?|[0-9a-fA-F:]+(\/\d{1,3})?)$/;

/** Rate limits and the audit log see the client address; only the listed proxies may say what it is. */
export function parseTrustProxy(value: string): string[] {
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = list.find((p) => !PROXY.test(p));
  if (bad) throw new ConfigError(`--trust-proxy: "${bad}" is not an address, a CIDR, loopback, linklocal or uniquelocal`);
  return list;
}

export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'data-dir': { type: 'string' },
        'database-url': { type: 'string' },
        listen: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-san': { type: 'string' },
        'insecure-http': { type: 'boolean' },
        'trust-proxy': { type: 'string' },
        'identity-reissue': { type: 'string' },
        'identity-validity-days': { type: 'string' },
        workers: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const { values, positionals } = parsed;
  const first = positionals[0];
  const command = values.help
    ? 'help'
    : first === undefined || first === 'serve'
      ? 'serve'
      : first === 'migrate' || first === 'backup'
        ? first
        : null;
  if (!command) throw new ConfigError(`unknown command "${first}" (try --help)`);

  const listen = parseListen(values.listen ?? env.ENCLAVE_LISTEN ?? '127.0.0.1:8443', '--listen');
  const tlsCertFile = values['tls-cert'] ?? env.ENCLAVE_TLS_CERT;
  const tlsKeyFile = values['tls-key'] ?? env.ENCLAVE_TLS_KEY;
  if (Boolean(tlsCertFile) !== Boolean(tlsKeyFile)) {
    throw new ConfigError('--tls-cert and --tls-key go together');
  }
  const reissue = values['identity-reissue'] ?? env.ENCLAVE_IDENTITY_REISSUE ?? 'revoke';
  if (reissue !== 'revoke' && reissue !== 'expire') throw new ConfigError(`--identity-reissue: expected revoke or expire, got "${reissue}"`);
  const validityDays = values['identity-validity-days'] ?? env.ENCLAVE_IDENTITY_VALIDITY_DAYS;
  const identityValidityDays = validityDays === '0' ? 0 : positiveInt(validityDays, '--identity-validity-days', 0);
  const databaseUrl = values['database-url'] ?? secretFromEnv(env, 'ENCLAVE_DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\/[^/]/.test(databaseUrl)) {
    // Never echo the value: it may hold a password.
    throw new ConfigError('--database-url: expected postgres://[user@]host[:port]/database');
  }
  const workersSetting = values.workers ?? env.ENCLAVE_WORKERS;
  const workers = workersSetting === 'auto' ? os.availableParallelism() : positiveInt(workersSetting, '--workers', 1);
  if (workers > MAX_WORKERS) throw new ConfigError(`--workers: at most ${MAX_WORKERS}`);
  const config: ServerConfig = {
    dataDir: path.resolve(values['data-dir'] ?? env.ENCLAVE_DATA_DIR ?? 'data'),
    databaseUrl,
    databasePasswordFile: env.ENCLAVE_DATABASE_PASSWORD_FILE || undefined,
    listenHost: listen.host,
    listenPort: listen.port,
    tlsCertFile,
    tlsKeyFile,
    insecureHttp: Boolean(values['insecure-http']) || env.ENCLAVE_INSECURE_HTTP === 'true',
    trustProxy: parseTrustProxy(values['trust-proxy'] ?? env.ENCLAVE_TRUST_PROXY ?? ''),
    masterKeyFile: env.ENCLAVE_MASTER_KEY_FILE || undefined,
    tokenSecretFile: env.ENCLAVE_TOKEN_SECRET_FILE || undefined,
    adminUser: env.ENCLAVE_ADMIN_USER || 'admin',
    adminPassword: secretFromEnv(env, 'ENCLAVE_ADMIN_PASSWORD'),
    tlsSans: (values['tls-san'] ?? env.ENCLAVE_TLS_SAN ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    tokenTtlSeconds: positiveInt(env.ENCLAVE_TOKEN_TTL_SECONDS, 'ENCLAVE_TOKEN_TTL_SECONDS', 900),
    robotTokenTtlSeconds: positiveInt(env.ENCLAVE_ROBOT_TOKEN_TTL_SECONDS, 'ENCLAVE_ROBOT_TOKEN_TTL_SECONDS', 900),
    logLevel: env.ENCLAVE_LOG_LEVEL || 'info',
    maxImportBytes: positiveInt(env.ENCLAVE_MAX_IMPORT_BYTES, 'ENCLAVE_MAX_IMPORT_BYTES', 64 * 1024 * 1024),
    overloadLagMs: env.ENCLAVE_OVERLOAD_LAG_MS === '0' ? 0 : positiveInt(env.ENCLAVE_OVERLOAD_LAG_MS, 'ENCLAVE_OVERLOAD_LAG_MS', DEFAULT_OVERLOAD.lagMs),
    overloadQueueMs: env.ENCLAVE_OVERLOAD_QUEUE_MS === '0' ? 0 : positiveInt(env.ENCLAVE_OVERLOAD_QUEUE_MS, 'ENCLAVE_OVERLOAD_QUEUE_MS', DEFAULT_OVERLOAD.queueMs),
    reportsLaterFrom: positiveInt(env.ENCLAVE_REPORTS_LATER_FROM, 'ENCLAVE_REPORTS_LATER_FROM', DEFAULT_REPORTS_LATER_FROM),
    xmlTimeLimitMs: positiveInt(env.ENCLAVE_XML_TIME_LIMIT_MS, 'ENCLAVE_XML_TIME_LIMIT_MS', 1500),
    importTimeLimitMs: positiveInt(env.ENCLAVE_IMPORT_TIME_LIMIT_MS, 'ENCLAVE_IMPORT_TIME_LIMIT_MS', 120_000),
    identityReissue: reissue,
    identityValidityDays,
    workers,
    changePollMs: env.ENCLAVE_CHANGE_POLL_MS ? positiveInt(env.ENCLAVE_CHANGE_POLL_MS, 'ENCLAVE_CHANGE_POLL_MS', 1000) : undefined,
  };
  return { command, args: positionals.slice(1), config };
}
