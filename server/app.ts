import crypto from 'node:crypto';
import express, { type Express } from 'express';
import helmet from 'helmet';
import { pinoHttp } from 'pino-http';
import { AuditService } from './audit/audit.service.js';
import { auditRoutes } from './audit/audit.routes.js';
import { authRoutes } from './auth/auth.routes.js';
import { AuthService } from './auth/auth.service.js';
import { authenticate, type PrincipalResolver } from './auth/authenticate.js';
import { LoginLimiter } from './auth/rate-limit.js';
import { TokenIssuer } from './auth/tokens.js';
import type { Db } from './db/database.js';
import { errorHandler, notFoundHandler } from './http/error-handler.js';
import type { Logger } from './logger.js';
import { HttpMetrics } from './ops/metrics.js';
import { opsRoutes } from './ops/ops.routes.js';
import type { Sealer } from './secrets/seal.js';
import { usersRoutes } from './users/users.routes.js';
import { UsersService } from './users/users.service.js';

export interface AppOptions {
  tokenTtlSeconds: number;
  robotTokenTtlSeconds: number;
  jsonLimit: string;
  maxImportBytes: number;
  loginMaxFailuresPerUser: number;
  loginMaxFailuresPerIp: number;
}

export interface AppDeps {
  db: Db;
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
  loginMaxFailuresPerUser: 5,
  loginMaxFailuresPerIp: 20,
};

export interface Services {
  audit: AuditService;
  users: UsersService;
  auth: AuthService;
  tokens: TokenIssuer;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Builds the whole HTTP application from its dependencies. Never listens: `main.ts` does. */
export function createApp(deps: AppDeps): Express {
  const options = { ...DEFAULT_APP_OPTIONS, ...deps.options };
  const now = deps.now ?? (() => new Date());
  const audit = new AuditService(deps.db, now);
  const users = new UsersService(deps.db, audit, now);
  const tokens = new TokenIssuer(deps.jwtSecret, options.tokenTtlSeconds, options.robotTokenTtlSeconds, () => now().getTime());
  const limiter = new LoginLimiter(options.loginMaxFailuresPerUser, options.loginMaxFailuresPerIp);
  const auth = new AuthService(users.repo, tokens, limiter, audit);
  const services: Services = { audit, users, auth, tokens };

  const resolver: PrincipalResolver = {
    user(name, ver) {
      const u = users.repo.get(name);
      return u && String(u.tokenEpoch) === ver ? { kind: 'user', name: u.name, role: u.role } : undefined;
    },
    robot: () => undefined,
  };

  const metrics = new HttpMetrics();
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.locals.services = services;

  app.use(
    pinoHttp({
      logger: deps.logger,
      genReqId: (req, res) => {
        const incoming = req.headers['x-request-id'];
        const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
        res.setHeader('X-Request-Id', id);
        return id;
      },
      // Only what is needed to follow a request: never headers, bodies or query strings.
      serializers: {
        req: (req: { id: string; method: string; url: string }) => ({ id: req.id, method: req.method, path: req.url.split('?')[0] }),
        res: (res: { statusCode: number }) => ({ status: res.statusCode }),
      },
      customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : 'info'),
    }),
  );
  app.use(metrics.middleware());
  app.use(helmet());
  app.use(express.json({ limit: options.jsonLimit, strict: true }));

  app.use(opsRoutes(deps.db, metrics));
  app.use(authRoutes(auth));
  app.use(authenticate(deps.jwtSecret, resolver));
  app.use(usersRoutes(users));
  app.use(auditRoutes(audit));

  app.use(notFoundHandler);
  app.use(errorHandler(deps.logger));
  return app;
}

export function servicesOf(app: Express): Services {
  return app.locals.services as Services;
}
