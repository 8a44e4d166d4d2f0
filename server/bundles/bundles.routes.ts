import crypto from 'node:crypto';
import { Router, type Request, type RequestHandler, type Response } from 'express';
import helmet from 'helmet';
import { z } from 'zod';
import { robotOf, type Guards } from '../acl/guard.js';
import type { RobotTokenVerifier } from '../auth/authenticate.js';
import type { RobotPrincipal } from '../auth/principal.js';
import { h } from '../http/handler.js';
import { query } from '../http/validate.js';
import { Unauthorized } from '../errors.js';
import type { Logger } from '../logger.js';
import type { HttpMetrics } from '../ops/metrics.js';
import type { BundlesService } from './bundles.service.js';

const BUNDLE_PATH = '/v1/robot/bundle';
export const BundleQuery = z.object({ wait: z.coerce.number().int().min(0).max(60).default(0) });

/** `If-None-Match: "rev"` (or W/"rev", or a bare rev) → the revision the robot holds. */
function knownRevision(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^(?:W\/)?"?([A-Za-z0-9]+)"?$/.exec(header.trim());
  return m?.[1];
}

/** Answers one bundle request: at once, or when a change gives the robot a new revision, or 304 after `wait`. */
async function answer(bundles: BundlesService, robot: RobotPrincipal, wait: number, req: Request, res: Response): Promise<void> {
  const known = knownRevision(req.headers['if-none-match']);
  const gone = new AbortController();
  // res 'close' before finishing = the client went away (req 'close' fires as soon as the request is read).
  res.on('close', () => {
    if (!res.writableFinished) gone.abort();
  });
  const outcome = await bundles.wait(robot.name, robot.keyId, known, wait, gone.signal);
  if (gone.signal.aborted) return;
  res.setHeader('Cache-Control', 'no-store');
  if (outcome === 'gone') throw new Unauthorized('invalid or expired token', 'invalid-token');
  if (outcome === null) {
    res.setHeader('ETag', `"${known}"`);
    res.status(304).end();
    return;
  }
  bundles.recordDelivery(robot.name, outcome);
  res.setHeader('ETag', `"${outcome.revision}"`);
  res.type('application/json').send(bundles.body(outcome));
}

export function bundlesRoutes(bundles: BundlesService, guards: Guards): Router {
  const r = Router();
  r.get(BUNDLE_PATH, guards.robot, h(async (req, res) => {
    await answer(bundles, robotOf(req), query(req, BundleQuery).wait, req, res);
  }));
  return r;
}

/** The headers helmet sets on every response, read once from helmet itself so both paths send the same. */
function helmetHeaders(): [string, string][] {
  const headers: [string, string][] = [];
  const res = { setHeader: (k: string, v: unknown) => void headers.push([k, String(v)]), removeHeader: () => {} };
  helmet()({} as Request, res as unknown as Response, () => {});
  return headers;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;
const PLAIN_QUERY = /^(?:\?wait=(\d{1,2}))?$/;

/**
 * The request a fleet makes most, without the general middleware stack: a robot with a valid token asking for
 * its bundle (`GET /v1/robot/bundle[?wait=N]`). Per request the general stack costs more than the answer
 * (request logger, a dozen header middlewares, body parser, passport), and ten thousand robots poll.
 * This path sends what that stack would (helmet's headers, X-Request-Id, metrics) and answers through the same
 * `answer`. Anything unusual (no or bad token, another query) goes down the general stack,
 * which renders and audits refusals as for every route.
 */
export function bundleFastPath(bundles: BundlesService, tokens: RobotTokenVerifier, metrics: HttpMetrics, logger: Logger): RequestHandler {
  const security = helmetHeaders();
  return (req, res, next) => {
    if (req.method !== 'GET' || !req.url.startsWith(BUNDLE_PATH)) return next();
    const q = PLAIN_QUERY.exec(req.url.slice(BUNDLE_PATH.length));
    const auth = req.headers.authorization;
    if (!q || !auth?.startsWith('Bearer ')) return next();
    const wait = q[1] === undefined ? 0 : Number(q[1]);
    if (wait > 60) return next();
    const robot = tokens.verify(auth.slice(7));
    if (!robot) return next();
    const start = process.hrtime.bigint();
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    res.setHeader('X-Request-Id', id);
    for (const [k, v] of security) res.setHeader(k, v);
    res.on('finish', () => {
      metrics.observe(req.method, BUNDLE_PATH, res.statusCode, start);
      // What the request logger writes for an answered poll, at the level it uses for them (debug).
      if (logger.isLevelEnabled('debug')) {
        const responseTime = Math.round(Number(process.hrtime.bigint() - start) / 1e6);
        logger.debug({ req: { id, method: req.method, path: BUNDLE_PATH }, res: { status: res.statusCode }, responseTime }, 'request completed');
      }
    });
    answer(bundles, robot, wait, req, res).catch(next);
  };
}
