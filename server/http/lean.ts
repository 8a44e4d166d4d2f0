import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Request, Response } from 'express';
import helmet from 'helmet';
import type { Logger } from '../logger.js';
import type { HttpMetrics } from '../ops/metrics.js';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** The caller's X-Request-Id when it is a plain token, else a new one; set on the response too. */
export function requestId(req: IncomingMessage, res: ServerResponse): string {
  const incoming = req.headers['x-request-id'];
  const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
  res.setHeader('X-Request-Id', id);
  return id;
}

/** The headers helmet sets on every response, read once from helmet itself so every path sends the same. */
function helmetHeaders(): [string, string][] {
  const headers: [string, string][] = [];
  const res = { setHeader: (k: string, v: unknown) => void headers.push([k, String(v)]), removeHeader: () => {} };
  helmet()({} as Request, res as unknown as Response, () => {});
  return headers;
}

/**
 * What the general middleware stack does for every request, done cheaply for the fleet's hot requests (a
 * robot's bundle poll and login), which skip that stack: the request id, helmet's headers, metrics under the
 * route's template, and the request logger's line (debug for answers, info for refusals, as the logger does).
 */
export class LeanLane {
  private readonly security = helmetHeaders();

  constructor(
    private readonly metrics: HttpMetrics,
    private readonly logger: Logger,
  ) {}

  begin(req: Request, res: Response, route: string): void {
    const start = process.hrtime.bigint();
    const id = requestId(req, res);
    for (const [k, v] of this.security) res.setHeader(k, v);
    res.on('finish', () => {
      this.metrics.observe(req.method, route, res.statusCode, start);
      const level = res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'info' : 'debug';
      if (this.logger.isLevelEnabled(level)) {
        const responseTime = Math.round(Number(process.hrtime.bigint() - start) / 1e6);
        this.logger[level]({ req: { id, method: req.method, path: route }, res: { status: res.statusCode }, responseTime }, 'request completed');
      }
    });
  }
}
