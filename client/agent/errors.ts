/**
 * Exit codes of `enclave-agent` (documented in README.md):
 *   0 success, or a clean stop of `run` after SIGTERM/SIGINT
 *   1 failure (I/O, unsafe runtime folder, not enrolled, server error, ...)
 *   2 usage error
 *   3 refused: the server refused this device (enrollment token invalid or used, device revoked or deleted),
 *     or the enclave `exec` needs is not bound, was revoked, or expired
 *   4 `status` only: the agent is not ready (not running, no enclave written yet, server unreachable, or no
 *     contact for STALE_AFTER_MS)
 * `exec` otherwise exits with its command's code (128+N when the command died of signal N).
 */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_REFUSED = 3;
export const EXIT_NOT_READY = 4;

/** An error whose message is fit for the user, with the exit code it should end the process with. */
export class AgentError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_FAILURE,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

/** The server refused this device's credentials: it was revoked or deleted. */
export class RefusedError extends AgentError {
  constructor(message: string) {
    super(message, EXIT_REFUSED);
    this.name = 'RefusedError';
  }
}
