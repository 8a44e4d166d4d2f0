import { DomainError } from '../errors.js';

/**
 * Anything wrong with a key, certificate, CRL or signed document. The message is public (it ends up
 * in API responses and import reports), so it names the problem and the file, never key material.
 * It is a DomainError (422) so the HTTP error handler reports it without extra mapping; its `cause`
 * keeps the underlying library error for logs.
 */
export class PkiError extends DomainError {
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(422, options?.code ?? 'pki-error', message);
    if (options?.cause !== undefined) {
      Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false });
    }
  }
}
