/**
 * A small JSON-over-HTTPS client on Node's own `http`/`https` (no dependency, quick to load).
 *
 * TLS: the server's CA is pinned by passing it as the only trusted root (`ca`), with certificate and host
 * name checks left on. There is deliberately no way to turn verification off. Plain `http://` is accepted
 * only for loopback addresses (tests, or a TLS proxy on the same host): enclave private keys travel in
 * bundles, so they must never cross a network in clear.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type { IncomingHttpHeaders } from 'node:http';
import * as tls from 'node:tls';
import * as zlib from 'node:zlib';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Local clock (ms) when the request was sent and when the response head arrived. */
  sentAt: number;
  receivedAt: number;
}

export interface RequestOptions {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Relative to the server URL, without a leading slash: `v1/robot/bundle?wait=30`. */
  path: string;
  headers?: Record<string, string>;
  json?: unknown;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Largest accepted response body. */
  maxBytes?: number;
}

/** The server could not be reached, or the exchange failed below HTTP (TLS, timeout, reset). */
export class NetworkError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'NetworkError';
  }
}

/** The server answered with an unexpected status. `code`/`serverMessage` come from `{error:{code,message}}`. */
export class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    readonly serverMessage: string | undefined,
    what: string,
    /** What a `Retry-After` header asked for, in ms from when the answer arrived. */
    readonly retryAfterMs?: number,
  ) {
    super(`${what}: HTTP ${status}${code ? ` ${code}` : ''}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.name = 'HttpStatusError';
  }
}

export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * Checks a server URL for use by a client: `https:` (then a CA is required), or `http:` on loopback only.
 * Returns an error message, or undefined when the URL is usable.
 */
export function checkServerUrl(raw: string, haveCa: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return `invalid server URL "${raw}"`;
  }
  if (url.username || url.password) return 'the server URL must not contain credentials';
  if (url.protocol === 'https:') return haveCa ? undefined : 'an https server needs its CA certificate (--ca FILE)';
  if (url.protocol === 'http:') {
    return isLoopbackHost(url.hostname)
      ? undefined
      : `refusing plain http to ${url.hostname}: enclave keys must not cross a network unencrypted (use https)`;
  }
  return `unsupported URL scheme ${url.protocol} (use https)`;
}

/** What a TLS verification failure means for a client that pins the server's CA (agent and enclavectl). */
export const TLS_HINTS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the server certificate is not signed by the pinned CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the server certificate is not signed by the pinned CA',
  SELF_SIGNED_CERT_IN_CHAIN: 'the server certificate is not signed by the pinned CA',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the server certificate is self-signed and not the pinned CA',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the server certificate does not name this host',
  CERT_HAS_EXPIRED: 'the server certificate has expired (or this clock is wrong)',
  CERT_NOT_YET_VALID: 'the server certificate is not yet valid (is this clock wrong?)',
};

export class HttpClient {
  readonly base: URL;
  private readonly agent: http.Agent;
  private readonly mod: typeof http | typeof https;

  /**
   * `secureContext` lets many clients share one parsed CA (a fleet simulation); otherwise each client makes its
   * own once, not once per connection as `https.Agent` would from a `ca` string.
   */
  constructor(serverUrl: string, ca?: string, secureContext?: tls.SecureContext) {
    const problem = checkServerUrl(serverUrl, ca !== undefined);
    if (problem) throw new Error(problem);
    const base = new URL(serverUrl);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this.base = base;
    if (base.protocol === 'https:') {
      this.mod = https;
      this.agent = new https.Agent({ keepAlive: true, maxSockets: 4, secureContext: secureContext ?? tls.createSecureContext({ ca }), rejectUnauthorized: true });
    } else {
      this.mod = http;
      this.agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    }
  }

  /** Closes idle keep-alive connections so the process can exit. */
  close(): void {
    this.agent.destroy();
  }

  request(opts: RequestOptions): Promise<HttpResponse> {
    return this.exchange(opts);
  }

  /**
   * A request whose `200` may be a watch (`application/x-ndjson`, see the server's `?watch=S`): then it resolves
   * as soon as the head arrives, hands `onLine` each line as it comes (gunzipped on the fly; lines longer than
   * `maxBytes` end it), and `ended` settles when the answer ends. Any other answer (an error, or a server that
   * answered as to a poll) resolves like `request`, with its whole body.
   */
  watch(opts: RequestOptions, onLine: (line: Buffer) => void): Promise<WatchResponse> {
    return this.exchange(opts, onLine);
  }

  private exchange(opts: RequestOptions, onLine?: (line: Buffer) => void): Promise<WatchResponse> {
    const url = new URL(opts.path, this.base);
    const maxBytes = opts.maxBytes ?? 1024 * 1024;
    // Bundles come gzipped when asked for: a third of the bytes on a robot's link (the server compresses them once).
    const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'gzip', ...opts.headers };
    let payload: Buffer | undefined;
    if (opts.json !== undefined) {
      payload = Buffer.from(JSON.stringify(opts.json));
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const what = `${opts.method} /${opts.path.split('?')[0]}`;
    return new Promise<WatchResponse>((resolve, reject) => {
      if (opts.signal?.aborted) {
        reject(new NetworkError(`${what}: aborted`, 'ABORT_ERR'));
        return;
      }
      const sentAt = Date.now();
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => {
        req.destroy();
        fail(new NetworkError(`${what}: aborted`, 'ABORT_ERR'));
      };
      function cleanup(): void {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
      }
      function fail(err: Error): void {
        if (settled) return;
        settled = true;
        cleanup();
        reject(err);
      }
      const req = this.mod.request(url, { method: opts.method, headers, agent: this.agent }, (res) => {
        const receivedAt = Date.now();
        if (onLine && res.statusCode === 200 && res.headers['content-type']?.startsWith(WATCH_MEDIA_TYPE)) {
          settled = true;
          const ended = readLines(res, onLine, maxBytes, what).finally(cleanup);
          // Settled by the caller's await on `ended`; marked handled here so a watch nobody awaits cannot crash.
          ended.catch(() => undefined);
          resolve({ status: 200, headers: res.headers, body: Buffer.alloc(0), sentAt, receivedAt, ended });
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBytes) {
            req.destroy();
            fail(new NetworkError(`${what}: response larger than ${maxBytes} bytes`, 'ETOOBIG'));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          if (settled) return;
          settled = true;
          cleanup();
          let body = Buffer.concat(chunks);
          const encoding = res.headers['content-encoding'];
          if (encoding === 'gzip') {
            try {
              body = zlib.gunzipSync(body, { maxOutputLength: maxBytes });
            } catch (err) {
              const tooBig = (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
              reject(tooBig ? new NetworkError(`${what}: response larger than ${maxBytes} bytes`, 'ETOOBIG') : new NetworkError(`${what}: bad gzip body`, 'EBADBODY'));
              return;
            }
          } else if (encoding !== undefined && encoding !== 'identity') {
            reject(new NetworkError(`${what}: unknown Content-Encoding ${JSON.stringify(encoding.slice(0, 40))}`, 'EBADBODY'));
            return;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, sentAt, receivedAt });
        });
        res.on('error', (err) => fail(describe(what, err)));
      });
      timer = setTimeout(() => {
        req.destroy();
        fail(new NetworkError(`${what}: no answer within ${Math.round(opts.timeoutMs / 1000)} s`, 'ETIMEDOUT'));
      }, opts.timeoutMs);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => fail(describe(what, err)));
      req.end(payload);
    });
  }
}

/** Gzipped watch bytes decoded in one call, not streamed (see `readLines`). */
const GZIP_WHOLE_BYTES = 1024 * 1024;

/** The media type of a watch's answer: one JSON document per line. */
export const WATCH_MEDIA_TYPE = 'application/x-ndjson';

export interface WatchResponse extends HttpResponse {
  /** Present for a watch: settles when its answer ends (rejects with a NetworkError if it broke off). */
  ended?: Promise<void>;
}

/**
 * Splits a watch's body into lines, gunzipping it on the fly when it is gzipped (one gzip member per line, which
 * zlib reads one after the other). Empty lines are skipped. Rejects when the answer breaks off, is no gzip, or
 * holds a line longer than `maxBytes`.
 */
function readLines(res: http.IncomingMessage, onLine: (line: Buffer) => void, maxBytes: number, what: string): Promise<void> {
  const encoding = res.headers['content-encoding'];
  return new Promise<void>((resolve, reject) => {
    if (encoding !== undefined && encoding !== 'gzip' && encoding !== 'identity') {
      res.destroy();
      reject(new NetworkError(`${what}: unknown Content-Encoding ${JSON.stringify(encoding.slice(0, 40))}`, 'EBADBODY'));
      return;
    }
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    // Rejected before the answer is destroyed: destroying it reports the break-off, which is not the reason.
    const fail = (err: NetworkError) => {
      reject(err);
      res.destroy();
    };
    const take = (chunk: Buffer) => {
      let start = 0;
      for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
        const line = pending.length ? Buffer.concat([...pending, chunk.subarray(start, nl)]) : chunk.subarray(start, nl);
        pending = [];
        pendingBytes = 0;
        start = nl + 1;
        if (line.length > maxBytes) return fail(new NetworkError(`${what}: a line larger than ${maxBytes} bytes`, 'ETOOBIG'));
        if (line.length > 0) onLine(line);
      }
      if (start < chunk.length) {
        pending.push(chunk.subarray(start));
        pendingBytes += chunk.length - start;
        if (pendingBytes > maxBytes) fail(new NetworkError(`${what}: a line larger than ${maxBytes} bytes`, 'ETOOBIG'));
      }
    };
    // The server writes each line as a gzip member of its own, in one HTTP chunk: it nearly always arrives whole
    // in one read, and gunzipping what has come in one call (members one after the other) costs what a poll's
    // answer does. A streaming inflater per watch would keep its own zlib state (about 40 KB) for the life of
    // the watch and hop to the thread pool at each read (100 µs a line against 69 µs here, plus 10 µs to make
    // one). Bytes that end inside a member wait for the rest; past GZIP_WHOLE_BYTES (a line that large would be
    // inflated again at each read) the watch switches to a streaming inflater.
    let raw: Buffer[] = [];
    let rawBytes = 0;
    let gunzip: zlib.Gunzip | undefined;
    const badGzip = () => fail(new NetworkError(`${what}: bad gzip body`, 'EBADBODY'));
    const inflate = (last: boolean) => {
      const buf = raw.length === 1 ? raw[0]! : Buffer.concat(raw);
      raw = [buf];
      let out: Buffer;
      try {
        out = zlib.gunzipSync(buf, { maxOutputLength: maxBytes });
      } catch (err) {
        if ((err as { code?: string }).code === 'Z_BUF_ERROR' && !last) return;
        return badGzip();
      }
      raw = [];
      rawBytes = 0;
      take(out);
    };
    res.on('data', (chunk: Buffer) => {
      if (encoding !== 'gzip') return take(chunk);
      if (gunzip) return void gunzip.write(chunk);
      raw.push(chunk);
      rawBytes += chunk.length;
      if (rawBytes <= GZIP_WHOLE_BYTES) return inflate(false);
      gunzip = zlib.createGunzip();
      gunzip.on('data', take);
      gunzip.on('end', () => resolve());
      gunzip.on('error', badGzip);
      for (const b of raw.splice(0)) gunzip.write(b);
    });
    res.on('end', () => {
      if (gunzip) return void gunzip.end();
      if (rawBytes > 0) inflate(true);
      resolve();
    });
    res.on('aborted', () => fail(new NetworkError(`${what}: the answer broke off`, 'ECONNRESET')));
    res.on('error', (err) => fail(describe(what, err)));
  });
}

function describe(what: string, err: Error & { code?: string }): NetworkError {
  const code = err.code;
  const hint = code ? TLS_HINTS[code] : undefined;
  if (hint) return new NetworkError(`${what}: TLS: ${hint} (${code})`, code);
  if (code === 'ECONNREFUSED') return new NetworkError(`${what}: connection refused`, code);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new NetworkError(`${what}: host name not resolved`, code);
  return new NetworkError(`${what}: ${err.message}`, code);
}

/** Parses a JSON body, or returns undefined. */
export function parseJson(res: HttpResponse): unknown {
  if (res.body.length === 0) return undefined;
  try {
    return JSON.parse(res.body.toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** Builds the error for a response whose status was not the expected one, using the API's error body. */
export function statusError(res: HttpResponse, what: string): HttpStatusError {
  const body = parseJson(res) as { error?: { code?: unknown; message?: unknown } } | undefined;
  const code = typeof body?.error?.code === 'string' ? body.error.code : undefined;
  const message = typeof body?.error?.message === 'string' ? body.error.message.slice(0, 300) : undefined;
  const retryAfter = res.headers['retry-after'];
  return new HttpStatusError(res.status, code, message, what, parseRetryAfter(retryAfter, res.headers.date, res.receivedAt));
}

/**
 * `Retry-After` as ms from now: delta-seconds, or an HTTP date taken against the server's own `Date` header
 * when it sent one (both are the server's clock), else against this clock. Undefined when unreadable.
 */
export function parseRetryAfter(value: string | undefined, serverDate: string | undefined, nowMs: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d{1,10}$/.test(v)) return Number(v) * 1000;
  if (!/[A-Za-z]/.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  const serverNow = serverDate === undefined ? Number.NaN : Date.parse(serverDate);
  return Math.max(at - (Number.isNaN(serverNow) ? nowMs : serverNow), 0);
}
