import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { createApp, servicesOf } from './app.js';
import { loadJwtSecret, loadMasterKey, prepareDataDir, writeSecretFile } from './bootstrap.js';
import { ConfigError, parseCommandLine, usage, type ServerConfig } from './config.js';
import { openDatabase } from './db/database.js';
import { openStore } from './store/open.js';
import type { Store } from './store/store.js';
import { trimChanges } from './events/change-log.js';
import { MIN_PASSWORD_LENGTH, randomPassword } from './auth/passwords.js';
import { createLogger, type Logger } from './logger.js';
import { ensureSelfSignedTls } from './tls/self-signed.js';
import { AuditService } from './audit/audit.service.js';
import { isWorker, onSiblingChanges, runWorkers, sumMetricsOverWorkers, tellSiblings } from './cluster.js';
import { UsersService } from './users/users.service.js';
import { DEFAULT_OVERLOAD, watchHandshakes } from './http/overload.js';

const CHANGE_LOG_KEEP_MS = 24 * 3_600_000;
/** Connections the kernel queues before the server accepts them (see `listen` below). */
const LISTEN_BACKLOG = 4096;

/**
 * Creates the first administrator when the database has no user at all. Replicas starting together on one
 * PostgreSQL may both find none: the second insert is a UniqueViolation, and the other replica's admin stands.
 */
async function ensureFirstAdmin(store: Store, users: UsersService, config: ServerConfig, logger: Logger): Promise<void> {
  if ((await store.read((r) => r.users.count())) > 0) return;
  let password = config.adminPassword;
  if (password !== undefined) {
    if (password.length < MIN_PASSWORD_LENGTH) {
      throw new ConfigError(`ENCLAVE_ADMIN_PASSWORD must be at least ${MIN_PASSWORD_LENGTH} characters`);
    }
  } else {
    const file = path.join(config.dataDir, 'initial-admin-password');
    if (fs.existsSync(file)) password = fs.readFileSync(file, 'utf8').trim();
    else {
      password = randomPassword();
      writeSecretFile(file, `${password}\n`);
    }
    // The path, never the password.
    logger.info({ user: config.adminUser, passwordFile: file }, 'created first administrator; password is in passwordFile');
  }
  // Checked again inside the (serialized) write: false when another replica made the first admin meanwhile.
  if (!(await users.createFirstAdmin(config.adminUser, password))) return;
  if (config.adminPassword !== undefined) logger.info({ user: config.adminUser }, 'created first administrator from ENCLAVE_ADMIN_PASSWORD');
}

/** The store the configuration names (SQLite in the data folder unless a database URL is given), migrated. */
async function openMigrated(config: ServerConfig, logger: Logger, onPublished?: () => void): Promise<Store> {
  prepareDataDir(config.dataDir, logger);
  const where = config.databaseUrl
    ? { url: config.databaseUrl, passwordFile: config.databasePasswordFile }
    : { sqliteFile: path.join(config.dataDir, 'enclaves.db') };
  const { store, migrations } = await openStore(where, {
    onFollowError: (err) => logger.warn({ err: (err as Error).message }, 'change log: following failed; retrying'),
    pollMs: config.changePollMs,
    onPublished,
  });
  // Where, never the URL itself: it may hold a password.
  logger.info({ store: store.dialect, ...(config.databaseUrl ? { database: describeDatabase(config.databaseUrl) } : {}) }, 'store open');
  if (migrations.applied.length) logger.info({ applied: migrations.applied }, 'applied migrations');
  return store;
}

function describeDatabase(url: string): string {
  const u = new URL(url);
  return `${u.hostname}${u.port ? `:${u.port}` : ''}${u.pathname}`;
}

/**
 * `--workers N` (N > 1): makes once what every worker loads (see cluster.ts), then runs the workers; resolves
 * with the exit code when they are done.
 */
async function primary(config: ServerConfig, logger: Logger): Promise<number> {
  const store = await openMigrated(config, logger);
  try {
    const sealer = loadMasterKey(config, logger);
    loadJwtSecret(config, logger);
    if (!config.insecureHttp && !config.tlsCertFile) ensureSelfSignedTls(config.dataDir, config.listenHost, config.tlsSans, sealer, logger);
    await ensureFirstAdmin(store, new UsersService(store, new AuditService(store), () => new Date()), config, logger);
  } finally {
    await store.close();
  }
  logger.info({ workers: config.workers }, 'starting workers');
  return runWorkers(config.workers, logger);
}

async function serve(config: ServerConfig, baseLogger: Logger): Promise<number | undefined> {
  if (config.workers > 1 && !isWorker()) return primary(config, baseLogger);
  const slot = isWorker() ? process.env.ENCLAVE_WORKER_SLOT : undefined;
  const logger = slot ? baseLogger.child({ worker: Number(slot) }) : baseLogger;
  const store = await openMigrated(config, logger, slot ? tellSiblings : undefined);
  if (slot) onSiblingChanges(() => void store.wake());
  const sealer = loadMasterKey(config, logger);
  const jwtSecret = loadJwtSecret(config, logger);
  const app = await createApp({
    store,
    logger,
    sealer,
    jwtSecret,
    options: {
      tokenTtlSeconds: config.tokenTtlSeconds,
      robotTokenTtlSeconds: config.robotTokenTtlSeconds,
      maxImportBytes: config.maxImportBytes,
      overload: { ...DEFAULT_OVERLOAD, lagMs: config.overloadLagMs, queueMs: config.overloadQueueMs },
      xmlTimeLimitMs: config.xmlTimeLimitMs,
      reportsLaterFrom: config.reportsLaterFrom,
      importTimeLimitMs: config.importTimeLimitMs,
      trustProxy: config.trustProxy.length ? config.trustProxy : false,
      identityReissue: config.identityReissue,
      identityValidityDays: config.identityValidityDays,
    },
  });
  if (slot) sumMetricsOverWorkers(servicesOf(app).metrics);
  // The primary made the first administrator before any worker started.
  if (!slot) await ensureFirstAdmin(store, servicesOf(app).users, config, logger);
  // The change log is read within seconds by every replica; a day keeps room for one that was down a while
  // (one away longer drops its caches and rebuilds them).
  const trim = setInterval(() => {
    const before = new Date(Date.now() - CHANGE_LOG_KEEP_MS).toISOString();
    store.tx((r) => trimChanges(r.sql, before)).catch((err) => logger.warn({ err: (err as Error).message }, 'change log: trim failed'));
  }, 3_600_000);
  trim.unref();
  await servicesOf(app).sandbox.warm();

  let server: http.Server;
  let scheme: 'http' | 'https';
  if (config.insecureHttp) {
    logger.warn('serving plain HTTP (--insecure-http): only behind a TLS-terminating proxy on a trusted network');
    server = http.createServer(app);
    scheme = 'http';
  } else {
    const tls = config.tlsCertFile
      ? { cert: fs.readFileSync(config.tlsCertFile, 'utf8'), key: fs.readFileSync(config.tlsKeyFile!, 'utf8') }
      : ensureSelfSignedTls(config.dataDir, config.listenHost, config.tlsSans, sealer, logger);
    const secure = https.createServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, app);
    watchHandshakes(secure, servicesOf(app).load);
    server = secure;
    scheme = 'https';
  }
  // Long polls hold a request up to 60 s; keep idle sockets a little longer than a poll cycle.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 120_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Node's default backlog (511) overflows when a fleet boots at once: the kernel then drops SYNs, and each
    // robot waits for its own retransmission (1 s, 3 s, 7 s…) before the server even sees it. The kernel caps
    // this at net.core.somaxconn (4096 by default since Linux 5.4).
    server.listen({ port: config.listenPort, host: config.listenHost, backlog: LISTEN_BACKLOG }, resolve);
  });
  servicesOf(app).metrics.watchAcceptQueue(server);
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  logger.info({ url: `${scheme}://${host}:${addr.port}`, dataDir: config.dataDir }, 'listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close(() => {
      void (async () => {
        // Re-issue revocations still waiting for their batch are signed now rather than at the next start.
        const { crls } = servicesOf(app);
        await crls.close();
        try {
          await crls.flushAll();
        } catch (err) {
          logger.warn({ err: (err as Error).message }, 'pending CRL revocations stay for the next start');
        }
        await store.close().catch(() => {});
        process.exit(0);
      })();
    });
    // Long polls and keep-alive sockets would hold close() open; they get a short grace period.
    server.closeIdleConnections?.();
    setTimeout(() => {
      server.closeAllConnections?.();
    }, 2_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A worker whose primary is gone (killed) stops too, rather than serve on unsupervised.
  if (slot) process.once('disconnect', () => stop('primary gone'));
  return undefined;
}

async function backup(config: ServerConfig, out: string | undefined, logger: Logger): Promise<void> {
  if (!out) throw new ConfigError('usage: enclave-server backup OUT');
  if (config.databaseUrl) throw new ConfigError('backup: the store is PostgreSQL; back it up with pg_dump (docs/deployment.md)');
  const target = path.resolve(out);
  if (fs.existsSync(target)) throw new ConfigError(`backup: ${target} already exists`);
  const file = path.join(config.dataDir, 'enclaves.db');
  if (!fs.existsSync(file)) throw new ConfigError(`backup: no database at ${file}`);
  const db = openDatabase(file);
  // The copy holds every sealed key: owner-only from its first byte, not just after the chmod at the end.
  const umask = process.umask(0o077);
  try {
    // SQLite's online backup API: a consistent snapshot while the server keeps running.
    await db.backup(target, {
      progress: ({ totalPages, remainingPages }) => {
        if (totalPages > 1000) process.stderr.write(`\rbackup: ${Math.round(((totalPages - remainingPages) / totalPages) * 100)}%`);
        return 200;
      },
    });
  } finally {
    process.umask(umask);
    db.close();
  }
  fs.chmodSync(target, 0o600);
  logger.info({ file: target }, 'backup written (keep the master key separately: the backup cannot be read without it)');
}

export async function main(argv = process.argv.slice(2)): Promise<number> {
  let parsed;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    process.stderr.write(`enclave-server: ${(err as Error).message}\n`);
    return 2;
  }
  const { command, args, config } = parsed;
  if (command === 'help') {
    process.stdout.write(`${usage()}\n`);
    return 0;
  }
  const logger = createLogger(config.logLevel);
  try {
    if (command === 'migrate') {
      const store = await openMigrated(config, logger);
      await store.close();
      return 0;
    }
    if (command === 'backup') {
      await backup(config, args[0], logger);
      return 0;
    }
    // A server keeps running (-1); a primary returns when its workers are done.
    return (await serve(config, logger)) ?? -1;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`enclave-server: ${err.message}\n`);
      return 2;
    }
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES') {
      process.stderr.write(`enclave-server: cannot listen on ${config.listenHost}:${config.listenPort} (${e.code})\n`);
      return 1;
    }
    logger.fatal({ err }, 'start-up failed');
    return 1;
  }
}

const isEntry = process.argv[1] && import.meta.url === new URL(`file://${path.resolve(process.argv[1])}`).href;
if (isEntry) {
  main().then((code) => {
    if (code >= 0) process.exit(code);
  });
}
