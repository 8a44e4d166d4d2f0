import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Express, Request, RequestHandler, Response } from 'express';
import helmet from 'helmet';
import type { Logger } from '../logger.js';
import type { HttpMetrics } from '../ops/metrics.js';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;
const REQUEST_ID_OF = Symbol('requestId');

/** The caller's X-Request-Id when it is a plain token, else a new one; set on the response too. */
function requestId(req: IncomingMessage, res: ServerResponse): string {
  const incoming = req.headers['x-request-id'];
  const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
  res.setHeader('X-Request-Id', id);
  (req as IncomingMessage & { [REQUEST_ID_OF]?: string })[REQUEST_ID_OF] = id;
  return id;
}

/** The id a request was given (for log lines about it, such as the error handler's). */
export function requestIdOf(req: IncomingMessage): string | undefined {
  return (req as IncomingMessage & { [REQUEST_ID_OF]?: string })[REQUEST_ID_OF];
}

/** The headers helmet sets on every response, read once from helmet itself. */
function helmetHeaders(): [string, string][] {
  const headers: [string, string][] = [];
  const res = { setHeader: (k: string, v: unknown) => void headers.push([k, String(v)]), removeHeader: () => {} };
  helmet()({} as Request, res as unknown as Response, () => {});
  return headers;
}

/** For the console's pages (its routes tighten the policy further). */
const PAGE_HEADERS = helmetHeaders();

/**
 * For every answer that is not a console page: JSON or text read by a program (a robot, the CLI, a probe, the
 * console's script), never rendered. Most of helmet's set is for HTML pages (a script and style policy,
 * cross-origin isolation, X-DNS-Prefetch-Control, X-Download-Options, ...) and does nothing for such an answer,
 * while its 12 headers cost a tenth of the CPU of a robot's `304`. These are OWASP's for REST services: never
 * sniffed as another type, never framed or embedded in another origin's page, HTTPS only.
 */
export const API_HEADERS: readonly (readonly [string, string])[] = [
  ['Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'"],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  PAGE_HEADERS.find(([k]) => k === 'Strict-Transport-Security')!,
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
];

/** The console's pages live under /ui; everything else is the API, the probes and their refusals. */
function headersFor(url: string | undefined): readonly (readonly [string, string])[] {
  return url === '/ui' || url?.startsWith('/ui/') || url?.startsWith('/ui?') ? PAGE_HEADERS : API_HEADERS;
}

/** The security headers in one step (helmet itself runs a dozen middlewares per request to set a fixed set). */
export function securityHeaders(): RequestHandler {
  return (req, res, next) => {
    for (const [k, v] of headersFor(req.url)) res.setHeader(k, v);
    next();
  };
}

/**
 * What the general middleware stack does for every request, done cheaply for the fleet's hot requests (a
 * robot's bundle poll, login and report), which skip that stack: the request id, the API's security headers,
 * metrics under the route's template, and the request log's line (debug for answers, info for refusals, as
 * `requestLog` does).
 */
export class LeanLane {
  constructor(
    private readonly metrics: HttpMetrics,
    private readonly logger: Logger,
  ) {}

  /** `start`: when the request arrived, if that was before this call (a long poll answered later). */
  begin(req: IncomingMessage, res: ServerResponse, route: string, start = process.hrtime.bigint()): void {
    const id = requestId(req, res);
    for (const [k, v] of API_HEADERS) res.setHeader(k, v);
    res.on('finish', () => {
      this.metrics.observe(req.method!, route, res.statusCode, start);
      logAnswer(this.logger, res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'info' : 'debug', id, req.method!, route, res.statusCode, start);
    });
  }
}

type Level = 'error' | 'info' | 'debug';

/** The one line a request leaves in the log: never headers, bodies or query strings. */
function logAnswer(logger: Logger, level: Level, id: string, method: string, path: string, status: number, start: bigint): void {
  if (!logger.isLevelEnabled(level)) return;
  const responseTime = Math.round(Number(process.hrtime.bigint() - start) / 1e6);
  logger[level]({ req: { id, method, path }, res: { status }, responseTime }, 'request completed');
}

/**
 * The general stack's request log: the request id, and one line once the answer is finished, at the level
 * `level` picks; none for requests `quiet` names. Not pino-http: it made a child logger per request, which
 * serializes the request's bindings at once, and that was a fifth of the CPU of a `/health` answer.
 */
export function requestLog(logger: Logger, quiet: (path: string) => boolean, level: (method: string, path: string, status: number) => Level): RequestHandler {
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    const id = requestId(req, res);
    const method = req.method;
    const path = req.originalUrl.split('?')[0]!;
    if (!quiet(path)) res.on('finish', () => logAnswer(logger, level(method, path, res.statusCode), id, method, path, res.statusCode, start));
    next();
  };
}

/**
 * A lane for requests answered before express sees them: `general()` hands the request to the app instead.
 * The lane must call it before it has written anything, and must not call it after.
 */
export type FrontLane = (req: IncomingMessage, res: ServerResponse, general: () => void) => void;

/**
 * Puts `lane` in front of `app`, wherever the app is mounted (an http server, supertest). For every request
 * express gives req and res its own prototypes, parses the query and walks its router to the first middleware:
 * for a fleet's long poll that was a sixth of the server's CPU in a rotation's profile, more than its token check
 * and its audit row together. The app stays the only thing callers hold; `app.handle` is what it calls.
 */
export function withFrontLane(app: Express, lane: FrontLane): void {
  type Handle = (req: IncomingMessage, res: ServerResponse, callback?: unknown) => void;
  const a = app as unknown as { handle: Handle };
  const general = a.handle.bind(app);
  a.handle = (req, res, callback) => lane(req, res, () => general(req, res, callback));
}

/** Front lanes tried in turn, each handing on to the next what is not its own, the last to the app. */
export function inTurn(...lanes: FrontLane[]): FrontLane {
  return lanes.reduceRight<FrontLane>(
    (next, lane) => (req, res, general) => lane(req, res, () => next(req, res, general)),
    (_req, _res, general) => general(),
  );
}

const REFUSED = Symbol('refusedByFrontLane');

/**
 * Hands the app a request a front lane refuses once it has read the body (which the app cannot read again):
 * `laneRefusals()`, the app's first middleware, passes `err` to the app's error handler, which renders it as it
 * renders every route's. The lane must not have written anything.
 */
export function refuseThroughApp(req: IncomingMessage, err: unknown, general: () => void): void {
  (req as IncomingMessage & { [REFUSED]?: unknown })[REFUSED] = err;
  general();
}

/** See `refuseThroughApp`. */
export function laneRefusals(): RequestHandler {
  return (req, _res, next) => {
    const err = (req as IncomingMessage & { [REFUSED]?: unknown })[REFUSED];
    if (err === undefined) next();
    else next(err);
  };
}
