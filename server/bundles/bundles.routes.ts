import { Router } from 'express';
import { z } from 'zod';
import { robotOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { query } from '../http/validate.js';
import { Unauthorized } from '../errors.js';
import type { BundlesService } from './bundles.service.js';

const BundleQuery = z.object({ wait: z.coerce.number().int().min(0).max(60).default(0) });

/** `If-None-Match: "rev"` (or W/"rev", or a bare rev) → the revision the robot holds. */
function knownRevision(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^(?:W\/)?"?([A-Za-z0-9]+)"?$/.exec(header.trim());
  return m?.[1];
}

export function bundlesRoutes(bundles: BundlesService, guards: Guards): Router {
  const r = Router();
  r.get('/v1/robot/bundle', guards.robot, h(async (req, res) => {
    const robot = robotOf(req);
    const { wait } = query(req, BundleQuery);
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
  }));
  return r;
}
