import { InvalidInput } from '../errors.js';

/**
 * A policy (or one of its included files) that cannot be turned into permissions. It is an
 * `InvalidInput` (422) so the HTTP layer reports it without special-casing; the message is public, so it
 * names policy-relative files, enclave paths and elements, never a path on the server's disk.
 */
export class PolicyError extends InvalidInput {
  constructor(message: string, details?: unknown) {
    super(message, details, 'invalid-policy');
  }
}
