/**
 * Exit codes of `enclavectl` (documented in docs/enclavectl.md) and the one error type commands throw.
 *
 *   0 success
 *   1 the server refused the request (4xx other than 401, 5xx), or a local I/O failure
 *   2 usage: bad flags or arguments, unreadable input file, missing password
 *   3 not logged in, session expired or no longer valid, or login refused (401): run `enclavectl login`
 *   4 the server could not be reached, or TLS verification against the pinned CA failed
 *   5 `audit verify`: the server reports the audit chain as broken
 *
 * Scripts can tell "fix the request" (1, 2) from "log in again" (3) from "retry later" (4).
 */
import { HttpStatusError, NetworkError, TLS_HINTS } from '../common/http.js';

export const EXIT_OK = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;
export const EXIT_AUTH = 3;
export const EXIT_UNREACHABLE = 4;
export const EXIT_AUDIT_BROKEN = 5;

/** An error whose message is fit to print after `enclavectl: `, with the exit code to end with. */
export class CtlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT_REFUSED,
    /** Extra lines (e.g. every problem the server found in an import), printed indented under the message. */
    readonly details: string[] = [],
  ) {
    super(message);
    this.name = 'CtlError';
  }
}

export class UsageError extends CtlError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
    this.name = 'UsageError';
  }
}

/** What the API's error body says, kept apart from the status so callers can match on the code. */
export class ServerError extends CtlError {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
    exitCode: number,
    details: string[],
  ) {
    super(message, exitCode, details);
    this.name = 'ServerError';
  }
}

const NETWORK_HINTS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (is the server running?)',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ENOTFOUND: 'host name not resolved',
  EAI_AGAIN: 'host name not resolved',
  EPROTO: 'TLS handshake failed (is it an https server?)',
};

/** A failure below HTTP, phrased so the URL is named: that is what an operator checks first. */
export function unreachable(server: string, code: string | undefined, fallback: string): CtlError {
  const tls = code ? TLS_HINTS[code] : undefined;
  if (tls) return new CtlError(`TLS verification of ${server} failed: ${tls} (${code})`, EXIT_UNREACHABLE);
  if (code === 'ETIMEDOUT') return new CtlError(`no answer from ${server}: ${fallback}`, EXIT_UNREACHABLE);
  const hint = (code && NETWORK_HINTS[code]) ?? fallback;
  return new CtlError(`cannot reach ${server}: ${hint}`, EXIT_UNREACHABLE);
}

/** `NetworkError` messages from client/common start with "METHOD /path: "; the URL says more to a human. */
function networkDetail(err: NetworkError): string {
  const i = err.message.indexOf(': ');
  return i >= 0 ? err.message.slice(i + 2) : err.message;
}

/** Renders the API's `details` (strings, `{field,problem}` objects, or anything else) as lines. */
export function detailLines(details: unknown, message: string): string[] {
  if (!Array.isArray(details)) return [];
  const lines = details.map((d) => {
    if (typeof d === 'string') return d;
    if (d && typeof d === 'object' && 'problem' in d) {
      const { field, problem } = d as { field?: unknown; problem?: unknown };
      return typeof field === 'string' ? `${field}: ${String(problem)}` : String(problem);
    }
    return JSON.stringify(d);
  });
  // Details that only repeat (part of) the message would make a one-line error three lines long.
  return lines.every((l) => message.includes(l)) ? [] : lines;
}

/** Turns an API error body into the CLI's error, choosing the exit code from status and code. */
export function fromResponse(status: number, body: unknown, server: string, retryAfter?: string, sessionExpiresAt?: string): ServerError {
  const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | undefined)?.error;
  const code = typeof error?.code === 'string' ? error.code : undefined;
  let message = typeof error?.message === 'string' ? error.message : `HTTP ${status} from ${server}`;
  const details = detailLines(error?.details, message);
  if (status === 401) {
    if (code === 'invalid-token') {
      // The server says the same for every bad token; the saved expiry tells the usual case apart.
      const expired = sessionExpiresAt === undefined || Date.parse(sessionExpiresAt) <= Date.now();
      message = expired
        ? 'session expired: run enclavectl login'
        : 'session no longer valid (password or role changed, or user deleted): run enclavectl login';
    }
    else if (code !== 'invalid-credentials') message = `${message}: run enclavectl login`;
    return new ServerError(status, code, message, EXIT_AUTH, details);
  }
  if (status === 429 && retryAfter) message = `${message} (retry in ${retryAfter} s)`;
  return new ServerError(status, code, message, EXIT_REFUSED, details);
}

/** Maps anything thrown into a CtlError; unknown errors keep their message, never a stack. */
export function toCtlError(err: unknown, server?: string): CtlError {
  if (err instanceof CtlError) return err;
  if (err instanceof NetworkError) return unreachable(server ?? 'the server', err.code, networkDetail(err));
  if (err instanceof HttpStatusError) {
    return new ServerError(err.status, err.code, err.serverMessage ?? err.message, err.status === 401 ? EXIT_AUTH : EXIT_REFUSED, []);
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e === 'object' && typeof e.code === 'string' && typeof e.path === 'string') {
    const what = { ENOENT: 'no such file or folder', EACCES: 'permission denied', EEXIST: 'already exists', EISDIR: 'is a folder', ENOTDIR: 'not a folder' }[e.code];
    return new CtlError(`${e.path}: ${what ?? e.message}`, EXIT_REFUSED);
  }
  return new CtlError(err instanceof Error ? err.message : String(err), EXIT_REFUSED);
}
