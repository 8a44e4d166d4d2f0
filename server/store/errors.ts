/**
 * What a store reports, whatever the engine. Services and the HTTP error renderer see these, never an engine's
 * error codes (SQLite's `SQLITE_CONSTRAINT_*`, PostgreSQL's SQLSTATEs); each store translates its own.
 * The messages are for logs, not for clients: they may name a constraint, never a value.
 */
export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A row with that key or unique value exists. */
export class UniqueViolation extends StoreError {}
/** A row refers to one that does not exist (or one still referred to was deleted). */
export class ForeignKeyViolation extends StoreError {}
/** A CHECK constraint (or a trigger such as the audit log's append-only guard) refused the write. */
export class ConstraintViolation extends StoreError {}
/**
 * The database cannot be reached or is shutting down, or a transaction kept conflicting: the request is
 * answered 503 with Retry-After, and robots keep the enclaves they hold and retry.
 */
export class StoreUnavailable extends StoreError {}

/** A value the engine cannot hold as given (PostgreSQL refuses a NUL character in text): the client's input, 400. */
export class InvalidValue extends StoreError {}
