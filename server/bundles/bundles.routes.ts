import type { IncomingMessage, ServerResponse } from 'node:http';
import { Router } from 'express';
import { z } from 'zod';
import { robotOf, type Guards } from '../acl/guard.js';
import type { RobotTokenVerifier } from '../auth/authenticate.js';
import type { RobotPrincipal } from '../auth/principal.js';
import { gzipMember, type Piece } from '../http/gzip-pieces.js';
import { h, sendJsonParts, wantsGzip } from '../http/handler.js';
import { query } from '../http/validate.js';
import { Unauthorized } from '../errors.js';
import type { FrontLane, LeanLane } from '../http/lean.js';
import type { BundlesService, CacheEntry } from './bundles.service.js';
import { REPORT_HEADER, REPORT_ON_NEXT_CONTACT, WATCH_MEDIA_TYPE } from './wire.js';

const BUNDLE_PATH = '/v1/robot/bundle';
export const BundleQuery = z.object({
  wait: z.coerce.number().int().min(0).max(60).default(0),
  watch: z.coerce.number().int().min(1).max(60).optional(),
});

/** `If-None-Match: "rev"` (or W/"rev", or a bare rev) → the revision the robot holds. */
function knownRevision(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^(?:W\/)?"?([A-Za-z0-9]+)"?$/.exec(header.trim());
  return m?.[1];
}

/**
 * Answers one bundle request: at once, or when a change gives the robot a new revision, or 304 after `wait`.
 * 'gone': the robot's enrollment changed while it waited (nothing written; the caller refuses it). `begin`
 * runs once the answer is certain, right before it is written.
 */
async function answer(bundles: BundlesService, robot: RobotPrincipal, wait: number, req: IncomingMessage, res: ServerResponse, begin: () => void): Promise<'answered' | 'gone'> {
  const known = knownRevision(req.headers['if-none-match']);
  // Only a poll that may be parked needs to hear that its client went away (res 'close' before finishing; req
  // 'close' fires as soon as the request is read); an answer at once does not pay for the controller.
  const gone = wait > 0 ? new AbortController() : undefined;
  if (gone) {
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
  }
  const outcome = await bundles.wait(robot.name, robot.keyId, known, wait, gone?.signal);
  if (gone?.signal.aborted) return 'answered';
  if (outcome === 'gone') return 'gone';
  if (outcome !== null) await bundles.recordDelivery(robot.name, outcome);
  begin();
  res.setHeader('Cache-Control', 'no-store');
  if (outcome === null) {
    res.setHeader('ETag', `"${known}"`);
    res.statusCode = 304;
    res.end();
    return 'answered';
  }
  res.setHeader('ETag', `"${outcome.revision}"`);
  if (bundles.reportsLater()) res.setHeader(REPORT_HEADER, REPORT_ON_NEXT_CONTACT);
  sendJsonParts(req, res, bundles.parts(outcome));
  return 'answered';
}

const NEWLINE: Piece = { raw: Buffer.from('\n') };

/**
 * Answers a watch (`?watch=S`): a `200` at once, then one line per new bundle (the JSON a poll's `200`
 * carries), for S seconds. Gzipped, each line is a gzip member of its own, so the robot can read each as it
 * comes. The response ends when the watch does (see `BundlesService.watch`): the robot's next request is the
 * next contact, when a report the server asked to be sent later goes.
 */
async function answerWatch(bundles: BundlesService, robot: RobotPrincipal, seconds: number, req: IncomingMessage, res: ServerResponse, begin: () => void): Promise<void> {
  const known = knownRevision(req.headers['if-none-match']);
  const gone = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) gone.abort();
  });
  const gzip = wantsGzip(req);
  begin();
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Type', WATCH_MEDIA_TYPE);
  res.setHeader('Vary', 'Accept-Encoding');
  // A proxy in front (nginx) must pass each line on as it comes, not buffer the answer.
  res.setHeader('X-Accel-Buffering', 'no');
  if (gzip) res.setHeader('Content-Encoding', 'gzip');
  if (bundles.reportsLater()) res.setHeader(REPORT_HEADER, REPORT_ON_NEXT_CONTACT);
  res.flushHeaders();
  // Deliveries are audited before they are written, one after the other; a bundle overtaken meanwhile is skipped.
  let latest: CacheEntry | undefined;
  let written = Promise.resolve();
  const send = (entry: CacheEntry): void => {
    latest = entry;
    written = written.then(async () => {
      if (entry !== latest || res.writableEnded || res.destroyed) return;
      try {
        await bundles.recordDelivery(robot.name, entry);
      } catch {
        // Not audited, so not sent: the watch ends, and the robot asks again.
        gone.abort();
        res.end();
        return;
      }
      const pieces = [...bundles.parts(entry), NEWLINE];
      // One chunk per line: the client's HTTP parser hands on each chunk as it comes, and a line in a dozen
      // chunks cost a robot a dozen reads (a dozen inflate attempts) instead of one.
      res.write(Buffer.concat(gzip ? gzipMember(pieces) : pieces.map((p) => p.raw)));
    });
  };
  // A robot gone meanwhile is told so on its next request (401).
  await bundles.watch(robot.name, robot.keyId, known, seconds, send, gone.signal);
  await written;
  if (!res.writableEnded && !res.destroyed) res.end();
}

export function bundlesRoutes(bundles: BundlesService, guards: Guards): Router {
  const r = Router();
  r.get(BUNDLE_PATH, guards.robot, h(async (req, res) => {
    const q = query(req, BundleQuery);
    if (q.watch !== undefined) return answerWatch(bundles, robotOf(req), q.watch, req, res, () => {});
    const outcome = await answer(bundles, robotOf(req), q.wait, req, res, () => {});
    if (outcome === 'gone') throw new Unauthorized('invalid or expired token', 'invalid-token');
  }));
  return r;
}

const PLAIN_QUERY = /^(?:\?(wait|watch)=(\d{1,2}))?$/;

/**
 * The request a fleet makes most, answered before express (see `withFrontLane`): a robot with a valid token
 * asking for its bundle (`GET /v1/robot/bundle[?wait=N|?watch=N]`). Per request the general stack costs more
 * than the answer (express's own dispatch, request logger, header middlewares, body parser, passport), and ten
 * thousand robots poll. The lean lane sends what that stack would (the API's security headers, X-Request-Id,
 * metrics, log line) and it answers through the same `answer` and `answerWatch` as the route. Anything unusual
 * (no or bad token, another query, a robot gone while it waited, a failure before the answer) goes to the
 * general stack, which answers, renders and audits it as for every route.
 */
export function bundleFastPath(bundles: BundlesService, tokens: RobotTokenVerifier, lane: LeanLane): FrontLane {
  return (req, res, general) => {
    if (req.method !== 'GET' || !req.url?.startsWith(BUNDLE_PATH)) return general();
    const q = PLAIN_QUERY.exec(req.url.slice(BUNDLE_PATH.length));
    const auth = req.headers.authorization;
    if (!q || !auth?.startsWith('Bearer ')) return general();
    const seconds = q[2] === undefined ? 0 : Number(q[2]);
    const watch = q[1] === 'watch';
    if (seconds > 60 || (watch && seconds < 1)) return general();
    const start = process.hrtime.bigint();
    const begin = () => lane.begin(req, res, BUNDLE_PATH, start);
    tokens
      .verify(auth.slice(7))
      .then(async (robot) => {
        if (!robot) return general();
        if (watch) return answerWatch(bundles, robot, seconds, req, res, begin);
        if ((await answer(bundles, robot, seconds, req, res, begin)) === 'gone') general();
      })
      .catch(() => {
        // Nothing is written before the answer is certain; should a write itself fail, the connection goes.
        if (res.headersSent) res.destroy();
        else general();
      });
  };
}
