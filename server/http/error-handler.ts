import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ZodError } from 'zod';
import { DomainError, ServiceUnavailable, TooManyRequests } from '../errors.js';
import type { Logger } from '../logger.js';
import { requestIdOf } from './lean.js';
import { InvalidValue, StoreUnavailable, UniqueViolation } from '../store/errors.js';

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return { error: details === undefined ? { code, message } : { code, message, details } };
}

export function zodProblems(err: ZodError): { field: string; problem: string }[] {
  return err.issues.map((i) => ({ field: i.path.join('.') || '(body)', problem: i.message }));
}

/**
 * The one place an error becomes a response. Domain errors carry their public status/code/message;
 * body-parser errors become 400/413; anything else is logged (with its stack, server-side only) and
 * answered with a bare 500.
 */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof DomainError) {
      if ((err instanceof TooManyRequests || err instanceof ServiceUnavailable) && err.retryAfterSeconds) {
        res.setHeader('Retry-After', String(err.retryAfterSeconds));
      }
      res.status(err.status).json(errorBody(err.code, err.message, err.details));
      return;
    }
    if (err instanceof ZodError) {
      const problems = zodProblems(err);
      const first = problems[0]!;
      res.status(422).json(errorBody('invalid-input', `${first.field}: ${first.problem}`, problems));
      return;
    }
    if (err instanceof StoreUnavailable) {
      // Robots keep the enclaves they hold and retry; the reason (which host, which SQLSTATE) stays in the log.
      logger.warn({ err, req: { id: requestIdOf(req) } }, 'database unavailable');
      res.setHeader('Retry-After', '5');
      res.status(503).json(errorBody('database-unavailable', 'the database is unavailable, retry later'));
      return;
    }
    const e = err as { type?: string; status?: number; code?: string };
    // A uniqueness race the services' own checks could not see (two requests creating the same name at once).
    if (err instanceof UniqueViolation) {
      res.status(409).json(errorBody('conflict', 'it already exists (created by a concurrent request)'));
      return;
    }
    if (err instanceof InvalidValue) {
      res.status(400).json(errorBody('invalid-input', 'the request holds a value that cannot be stored (e.g. a NUL character)'));
      return;
    }
    if (e?.type === 'entity.parse.failed') {
      res.status(400).json(errorBody('invalid-json', 'request body is not valid JSON'));
      return;
    }
    if (e?.type === 'entity.too.large') {
      res.status(413).json(errorBody('payload-too-large', 'request body too large'));
      return;
    }
    if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
      res.status(415).json(errorBody('unsupported-media-type', 'unsupported content encoding'));
      return;
    }
    if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) {
      res.status(e.status).json(errorBody('bad-request', 'bad request'));
      return;
    }
    logger.error({ err, req: { id: requestIdOf(req) } }, 'unhandled error');
    res.status(500).json(errorBody('internal', 'internal error'));
  };
}

export const notFoundHandler: RequestHandler = (_req, res) => {
  res.status(404).json(errorBody('not-found', 'no such route'));
};
