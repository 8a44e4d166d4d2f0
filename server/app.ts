import type { IncomingMessage } from 'node:http';
import express, { type ErrorRequestHandler, type Express } from 'express';
import proxyaddr from 'proxy-addr';
import { AuditService } from './audit/audit.service.js';
import { auditRoutes } from './audit/audit.routes.js';
import { authRoutes } from './auth/auth.routes.js';
import { AuthService } from './auth/auth.service.js';
import { authenticate, RobotTokenVerifier, type PrincipalResolver } from './auth/authenticate.js';
import type { Principal } from './auth/principal.js';
import { DEFAULT_LOGIN_THROTTLE, LoginThrottle, type LoginThrottleOptions } from './auth/throttle.js';
import { RefusalLog } from './audit/refusals.js';
import { Denied } from './errors.js';
import { Guards } from './acl/guard.js';
import { robotTokenVersion, TokenIssuer, userTokenVersion } from './auth/tokens.js';
import type { Store } from './store/store.js';
import { errorHandler, notFoundHandler } from './http/error-handler.js';
import { inTurn, LeanLane, laneRefusals, requestLog, securityHeaders, withFrontLane } from './http/lean.js';
import { DEFAULT_OVERLOAD, LoadMonitor, shedWhenOverloaded, type OverloadOptions } from './http/overload.js';
import type { Logger } from './logger.js';
import { HttpMetrics } from './ops/metrics.js';
import { opsRoutes } from './ops/ops.routes.js';
import { openapiRoutes } from './openapi/openapi.routes.js';
import type { Sealer } from './secrets/seal.js';
import { usersRoutes } from './users/users.routes.js';
import { UsersService } from './users/users.service.js';
import { bindingsRoutes } from './bindings/bindings.routes.js';
import { BindingsService } from './bindings/bindings.service.js';
import { bundleFastPath, bundlesRoutes } from './bundles/bundles.routes.js';
import { BundlesService } from './bundles/bundles.service.js';
import { DEFAULT_REPORTS_LATER_FROM } from './bundles/wire.js';
import { ChangeFeed } from './events/changes.js';
import { grantsRoutes } from './grants/grants.routes.js';
import { GrantsService } from './grants/grants.service.js';
import { identitiesRoutes } from './identities/identities.routes.js';
import { DEFAULT_IDENTITY_OPTIONS, IdentitiesService, type ReissuePolicy } from './identities/identities.service.js';
import { DEFAULT_CRL_BATCH_MS, KeystoreCrls } from './keystores/crl.js';
import { EnclavesService } from './keystores/enclaves.service.js';
import { keystoresRoutes } from './keystores/keystores.routes.js';
import { KeystoresService } from './keystores/keystores.service.js';
import { XmlSandbox } from './sandbox/sandbox.js';
import { robotLoginFrontLane, robotReportFastPath, robotsAuthedRoutes, robotsRoutes } from './robots/robots.routes.js';
import { RobotsService } from './robots/robots.service.js';
import { consoleApiRoutes, consoleStaticRoutes, defaultUiDir } from './console/console.routes.js';
import { FleetService } from './console/fleet.service.js';

export interface AppOptions {
  tokenTtlSeconds: number;
  robotTokenTtlSeconds: number;
  jsonLimit: string;
  maxImportBytes: number;
  loginThrottle: LoginThrottleOptions;
  /** Failed enrollments / robot logins per address and window before they are answered 429. */
  robotMaxFailuresPerAddress: number;
  /**
   * Express's `trust proxy`: which proxies may tell the client address (X-Forwarded-For). false: none (the
   * socket's address is the client's); otherwise a list of addresses/CIDRs of the TLS proxies in front.
   */
  trustProxy: false | string[];
  /** When to shed robot logins and enrollments (`lagMs: 0`: never, the default for apps built in tests). */
  overload: OverloadOptions;
  /** Time limit for reading one uploaded policy or governance document (ms), in the XML sandbox. */
  xmlTimeLimitMs: number;
  /** Time limit for reading and checking one uploaded sros2 keystore archive (ms), in the XML sandbox. */
  importTimeLimitMs: number;
  /** Where the built web console is (`npm run build` → dist/ui); served at /ui/. */
  uiDir: string;
  /** A robot's previous per-robot certificate on re-issue: `revoke` (CRL) or `expire` (superseded only). */
  identityReissue: ReissuePolicy;
  /** Per-robot certificate requests one robot may make per enclave: burst, and per hour on average. */
  identityBurst: number;
  identityPerHour: number;
  /** Lifetime of per-robot certificates in days (0: the enclave's validity). */
  identityValidityDays: number;
  /** How long re-issue revocations wait to be signed into their keystore's CRL together (ms). */
  crlBatchMs: number;
  /** From how many robots long-polling on this process bundle answers ask for the report on the next contact. */
  reportsLaterFrom: number;
}

export interface AppDeps {
  /** Migrated and started (store/open.ts): SQLite or PostgreSQL, the app cannot tell. */
  store: Store;
  logger: Logger;
  sealer: Sealer;
  jwtSecret: Buffer;
  options?: Partial<AppOptions>;
  now?: () => Date;
}

export const DEFAULT_APP_OPTIONS: AppOptions = {
  tokenTtlSeconds: 900,
  robotTokenTtlSeconds: 900,
  jsonLimit: '1mb',
  maxImportBytes: 64 * 1024 * 1024,
  loginThrottle: DEFAULT_LOGIN_THROTTLE,
  robotMaxFailuresPerAddress: 100,
  trustProxy: false,
  overload: { ...DEFAULT_OVERLOAD, lagMs: 0 },
  xmlTimeLimitMs: 1500,
  importTimeLimitMs: 120_000,
  uiDir: defaultUiDir(),
  identityReissue: DEFAULT_IDENTITY_OPTIONS.reissue,
  identityBurst: DEFAULT_IDENTITY_OPTIONS.burst,
  identityPerHour: DEFAULT_IDENTITY_OPTIONS.perHour,
  identityValidityDays: DEFAULT_IDENTITY_OPTIONS.validityDays,
  crlBatchMs: DEFAULT_CRL_BATCH_MS,
  reportsLaterFrom: DEFAULT_REPORTS_LATER_FROM,
};

export interface Services {
  audit: AuditService;
  users: UsersService;
  auth: AuthService;
  tokens: TokenIssuer;
  changes: ChangeFeed;
  refusals: RefusalLog;
  grants: GrantsService;
  keystores: KeystoresService;
  enclaves: EnclavesService;
  robots: RobotsService;
  bindings: BindingsService;
  bundles: BundlesService;
  identities: IdentitiesService;
  crls: KeystoreCrls;
  load: LoadMonitor;
  /** Where uploaded XML is read (worker threads with time and memory limits). */
  sandbox: XmlSandbox;
  metrics: HttpMetrics;
}

/**
 * Builds the whole HTTP application from its dependencies. Never listens: `main.ts` does. Async only for what
 * must be in the store before the first request (revocations a stop left unsigned).
 */
export async function createApp(deps: AppDeps): Promise<Express> {
  const options = { ...DEFAULT_APP_OPTIONS, ...deps.options };
  const now = deps.now ?? (() => new Date());
  const { store } = deps;
  const audit = new AuditService(store, now);
  const refusals = new RefusalLog(audit, () => now().getTime(), undefined, (err) =>
    deps.logger.warn({ err: (err as Error).message }, 'refusal summary not written'),
  );
  const changes = store.changes;
  const users = new UsersService(store, audit, now);
  const tokens = new TokenIssuer(deps.jwtSecret, options.tokenTtlSeconds, options.robotTokenTtlSeconds, () => now().getTime());
  const throttle = new LoginThrottle(() => now().getTime(), options.loginThrottle);
  const auth = new AuthService(store, tokens, throttle, audit);
  const importLimits = { maxUnpackedBytes: options.maxImportBytes * 4, maxEntries: 100_000, maxFileBytes: 4 * 1024 * 1024 };
  const sandbox = new XmlSandbox({ xmlTimeLimitMs: options.xmlTimeLimitMs, importTimeLimitMs: options.importTimeLimitMs });
  const keystores = new KeystoresService(store, deps.sealer, audit, importLimits, now, sandbox);
  const grants = new GrantsService(store, audit, now);
  const guards = new Guards((user) => grants.forUser(user));
  const crls = new KeystoreCrls(store, keystores, now, options.crlBatchMs, (keystore, err) =>
    deps.logger.warn({ keystore, err: (err as Error).message }, 'CRL batch not signed; it is signed at the next flush'),
  );
  const enclaves = new EnclavesService(store, deps.sealer, keystores, audit, now, sandbox, crls);
  const robots = new RobotsService(store, tokens, audit, now, {
    maxFailuresPerAddress: options.robotMaxFailuresPerAddress,
    failureWindowMs: 15 * 60_000,
  });
  const bindings = new BindingsService(store, audit, now);
  const bundles = new BundlesService(store, bindings, deps.sealer, audit, now, options.reportsLaterFrom);
  const identities = new IdentitiesService(store, keystores, crls, bindings, audit, now, async (robot) => (await bundles.current(robot)).revision, {
    reissue: options.identityReissue,
    burst: options.identityBurst,
    perHour: options.identityPerHour,
    validityDays: options.identityValidityDays,
  });
  robots.identities = identities;
  // Revocations a stop left unsigned (see KeystoreCrls) are in the CRL before the first bundle is served.
  await crls.flushAll();
  const load = new LoadMonitor(options.overload);
  const metrics = new HttpMetrics();
  const services: Services = { audit, users, auth, tokens, changes, refusals, grants, keystores, enclaves, robots, bindings, bundles, identities, crls, sandbox, load, metrics };

  const resolver: PrincipalResolver = {
    async user(name, ver) {
      const u = await store.read((r) => r.users.get(name));
      return u && userTokenVersion(u) === ver ? { kind: 'user', name: u.name, role: u.role } : undefined;
    },
    robot: async (name, ver) => robotPrincipal(await store.read((r) => r.robots.get(name)), ver),
  };

  const app = express();
  app.disable('x-powered-by');
  // Flat `key=value` queries are all the API takes: Node's querystring, not qs's nested syntax, which cost a
  // fleet's every long poll (`?wait=30`) more than its token check.
  app.set('query parser', 'simple');
  app.set('trust proxy', options.trustProxy === false ? false : options.trustProxy.join(','));
  app.locals.services = services;
  const lifetimes = { userSeconds: options.tokenTtlSeconds, robotSeconds: options.robotTokenTtlSeconds };
  // The fleet's hot requests first, past the general stack below (which answers everything else).
  const lane = new LeanLane(metrics, deps.logger);
  // Bundle polls check the robot against the row the bundle cache holds (dropped by every change to the robot):
  // a cache hit runs no query. A robot deleted or re-keyed on another replica is refused here once this one has
  // heard the change (the change log, within a second); on the replica that made the change, at once.
  const cachedResolver: PrincipalResolver = {
    ...resolver,
    robot: async (name, ver) => robotPrincipal(await bundles.robot(name), ver),
  };
  const robotTokens = new RobotTokenVerifier(deps.jwtSecret, cachedResolver, lifetimes);
  // express's own `req.ip`, for requests answered before express dresses them.
  const clientAddress = (req: IncomingMessage): string => proxyaddr(req, app.get('trust proxy fn') as (addr: string, i: number) => boolean);
  withFrontLane(app, inTurn(bundleFastPath(bundles, robotTokens, lane), robotLoginFrontLane(robots, bundles.atLogin, lane, load, options.jsonLimit, clientAddress)));
  app.use(laneRefusals());
  app.use(robotReportFastPath(robots, robotTokens, lane, load, options.jsonLimit));

  app.use(
    requestLog(
      deps.logger,
      // Probes hit these every few seconds; their counts are in /metrics, not in the log.
      (path) => path === '/health' || path === '/ready' || path === '/metrics',
      // A fleet's answered polls and reports are most requests and say nothing new (deliveries are audited once
      // per revision, reports are in the inventory, counts in /metrics): debug level, as the lean lane logs them.
      (method, path, status) =>
        status >= 500
          ? 'error'
          : status < 400 && (method === 'GET' ? path === '/v1/robot/bundle' : path === '/v1/robot/report')
            ? 'debug'
            : 'info',
    ),
  );
  app.use(metrics.middleware());
  app.use(shedWhenOverloaded(load));
  app.use(securityHeaders());
  app.use(express.json({ limit: options.jsonLimit, strict: true, inflate: false }));

  app.use(opsRoutes(store, metrics));
  app.use(authRoutes(auth));
  app.use(robotsRoutes(robots, bundles.atLogin));
  app.use(consoleStaticRoutes(options.uiDir));
  app.use(authenticate(deps.jwtSecret, resolver, lifetimes));
  app.use(usersRoutes(users, guards));
  app.use(grantsRoutes(grants, guards));
  app.use(keystoresRoutes(keystores, enclaves, guards, options.maxImportBytes, sandbox));
  app.use(robotsAuthedRoutes(robots, guards));
  app.use(bindingsRoutes(bindings, guards));
  app.use(bundlesRoutes(bundles, guards));
  app.use(identitiesRoutes(identities, guards));
  app.use(auditRoutes(audit, guards));
  app.use(consoleApiRoutes(new FleetService(store, bundles, now), guards));

  app.use(openapiRoutes(app));
  app.use(notFoundHandler);
  // Refusals of authenticated callers go to the audit log (bounded); the renderer below answers them.
  app.use(((err, req, _res, next) => {
    // Answered once the refusal is written (it never rejects): an audit read right after sees it, on any engine.
    if (err instanceof Denied && req.principal) {
      void refusals.record(req.principal.name, req.principal.kind, err.refusal, `${req.method} ${req.path}`).then(() => next(err));
      return;
    }
    next(err);
  }) as ErrorRequestHandler);
  app.use(errorHandler(deps.logger));
  return app;
}

/** A robot token stands while the robot is enrolled with the key (and enrollment) the token was issued for. */
function robotPrincipal(r: { name: string; keyId: string | null; enrolledAt: string | null } | undefined, ver: string): Principal | undefined {
  return r && r.keyId !== null && robotTokenVersion(r) === ver ? { kind: 'robot', name: r.name, keyId: r.keyId } : undefined;
}

export function servicesOf(app: Express): Services {
  return app.locals.services as Services;
}
