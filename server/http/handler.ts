import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import Negotiator from 'negotiator';
import { gzipMember, type Piece } from './gzip-pieces.js';

/** Express 4 does not catch rejected promises: route them to the error handler. */
export function h(fn: (req: Request, res: Response, next: NextFunction) => unknown): RequestHandler {
  return (req, res, next) => {
    try {
      const out = fn(req, res, next);
      if (out instanceof Promise) out.catch(next);
    } catch (err) {
      next(err);
    }
  };
}

/** The client address as the socket sees it (no X-Forwarded-For unless trust proxy is configured). */
export function clientIp(req: Request): string {
  return req.ip ?? req.socket.remoteAddress ?? 'unknown';
}

const ENCODINGS = ['gzip', 'identity'];

/** Whether the client prefers gzip to no encoding at all. */
export function wantsGzip(req: IncomingMessage): boolean {
  // Negotiated (q-values) only when gzip is named at all: most pollers that do not ask pay one lookup. Negotiator
  // is what express's `req.acceptsEncodings` asks, called directly so that requests answered before express
  // (see `withFrontLane`) negotiate alike.
  const asked = req.headers['accept-encoding'];
  return asked !== undefined && /gzip/i.test(asked) && new Negotiator(req).encoding(ENCODINGS) === 'gzip';
}

/**
 * Sends JSON already serialized in pieces (cached bytes spliced together), corked into one write, as gzip
 * when the client prefers it (see `gzip-pieces.ts`: shared pieces are compressed once, secrets never). Not
 * `res.send`: that would concatenate the pieces and hash them all for an ETag nobody asked for.
 */
export function sendJsonParts(req: IncomingMessage, res: ServerResponse, pieces: readonly Piece[]): void {
  const gzip = wantsGzip(req);
  const parts = gzip ? gzipMember(pieces) : pieces.map((p) => p.raw);
  let length = 0;
  for (const p of parts) length += p.length;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Vary', 'Accept-Encoding');
  if (gzip) res.setHeader('Content-Encoding', 'gzip');
  res.setHeader('Content-Length', length);
  res.cork();
  for (const p of parts) res.write(p);
  // end() uncorks the socket fully: the head and the pieces leave in one write.
  res.end();
}
