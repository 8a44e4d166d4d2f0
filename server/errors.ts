/**
 * Typed domain errors. Domain code throws these; `server/http/error-handler.ts` is the only place that
 * turns them into `{"error":{"code","message"}}`. The message is public: never put a secret, a path on
 * disk, SQL or a stack into it.
 */
export class DomainError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra public detail (e.g. the list of problems found in an import). */
    readonly details?: unknown,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class InvalidInput extends DomainError {
  constructor(message: string, details?: unknown, code = 'invalid-input') {
    super(422, code, message, details);
  }
}
export class BadRequest extends DomainError {
  constructor(message: string, code = 'bad-request') {
    super(400, code, message);
  }
}
export class Unauthorized extends DomainError {
  constructor(message = 'authentication required', code = 'unauthorized') {
    super(401, code, message);
  }
}
export class Forbidden extends DomainError {
  constructor(message = 'not allowed', code = 'forbidden') {
    super(403, code, message);
  }
}
export class NotFound extends DomainError {
  constructor(message: string, code = 'not-found') {
    super(404, code, message);
  }
}
export class Conflict extends DomainError {
  constructor(message: string, code = 'conflict') {
    super(409, code, message);
  }
}
export class PayloadTooLarge extends DomainError {
  constructor(message = 'request body too large', code = 'payload-too-large') {
    super(413, code, message);
  }
}
export class TooManyRequests extends DomainError {
  constructor(message = 'too many requests', readonly retryAfterSeconds?: number) {
    super(429, 'too-many-requests', message);
  }
}

/** The server is saturated: come back after `retryAfterSeconds` (spread so that a fleet does not return at once). */
export class ServiceUnavailable extends DomainError {
  constructor(message: string, readonly retryAfterSeconds: number, code = 'overloaded') {
    super(503, code, message);
  }
}

/** What an access refusal was about, for the audit log (never a secret: names and reasons only). */
export interface Refusal {
  capability: string;
  target?: string;
  reason: string;
}

/**
 * An access decision said no. Rendered like any 403/404 (a member asking about an enclave they may not read
 * gets the same 404 as for one that does not exist), and recorded in the audit log as `denied`.
 */
export class Denied extends DomainError {
  constructor(status: 403 | 404, message: string, readonly refusal: Refusal, code = status === 404 ? 'not-found' : 'forbidden') {
    super(status, code, message);
  }
}
