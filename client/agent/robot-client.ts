/**
 * The robot's side of the API: device login with a signed assertion, the bundle (long poll) and the report.
 * Keeps the robot token in memory only and renews it before it expires. Measures the clock skew against
 * the server's `Date` header on every answer.
 */
import { randomBytes, sign, type KeyObject } from 'node:crypto';
import { HttpClient, HttpStatusError, NetworkError, parseJson, statusError, type HttpResponse, type WatchResponse } from '../common/http.js';
import { reportOnNextContact, type IdentityRequest, type IdentityResponse, type RobotAssertionClaims, type RobotAuthRequest, type RobotAuthResponse, type RobotReport } from '../common/robot-wire.js';
import { REVISION } from './bundle.js';
import { RefusedError } from './errors.js';
import type { Logger } from './log.js';

export const AUDIENCE = 'enclave-server';
/** Lifetime of a device assertion; the server accepts at most 300 s. */
const ASSERTION_TTL_S = 120;
/** Renew the robot token when less than this is left (plus the long-poll wait). */
const TOKEN_MARGIN_MS = 60_000;
/** A skew this large makes a retry of a refused login with the server's time worthwhile. */
const SKEW_RETRY_MS = 60_000;
const REQUEST_TIMEOUT_MS = 15_000;
const MAX_BUNDLE_BYTES = 64 * 1024 * 1024;

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** A compact ES256 JWT signed by the device key, fresh `jti` each time. */
export function signAssertion(key: KeyObject, robot: string, nowMs: number): string {
  const iat = Math.floor(nowMs / 1000);
  const claims: RobotAssertionClaims = {
    sub: robot,
    aud: AUDIENCE,
    iat,
    exp: iat + ASSERTION_TTL_S,
    jti: randomBytes(18).toString('base64url'),
  };
  const input = `${b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(signature)}`;
}

export type BundleFetch =
  | { changed: true; body: unknown; etag: string | undefined }
  | { changed: false };

/** An open watch: the bundles it brought that were not taken yet, and whether (and how) it ended. */
interface OpenWatch {
  /** The revision the loop holds once it took everything handed out so far (as it sends If-None-Match). */
  etag: string;
  queue: BundleFetch[];
  ended: boolean;
  error?: unknown;
  wake?: () => void;
  abort: AbortController;
}

/** The If-None-Match for a bundle's revision, when it is one the server could have made (letters and digits). */
function etagOf(body: unknown): string | undefined {
  const rev = (body as { revision?: unknown } | undefined)?.revision;
  const text = typeof rev === 'string' || typeof rev === 'number' ? String(rev) : '';
  return REVISION.test(text) ? `"${text}"` : undefined;
}

/** What `POST /v1/robot/identity` answered; other answers throw (HttpStatusError, NetworkError). */
export type IdentityOutcome =
  | { kind: 'issued'; identity: IdentityResponse }
  /** 404: the enclave is not (or no longer) bound to this robot. */
  | { kind: 'unbound' }
  /** 409 key-reused: the server has seen this public key before; a new key is needed. */
  | { kind: 'key-reused' };

export interface RobotClientOptions {
  server: string;
  ca: string | undefined;
  robot: string;
  key: KeyObject;
  log: Logger;
}

export class RobotClient {
  readonly http: HttpClient;
  /** Server clock minus local clock, from the last answer's `Date` header (±0.5 s). */
  clockSkewMs = 0;
  private skewKnown = false;
  private token: { value: string; expiresAtMs: number } | undefined;
  /** Until a server says otherwise (422), a login that needs the bundle asks for it in the same answer. */
  private loginCarriesBundle = true;
  /**
   * Whether the last answer that brought a bundle asked for the report on the next contact rather than at
   * once (`Enclave-Report: next-contact`, from servers with a large fleet waiting).
   */
  reportOnNextContact = false;
  /**
   * Until a server answers a watch as a poll (one from before `?watch`), the robot waits for changes on a
   * watch: one open answer that brings each new bundle, so a delivery is not followed at once by a new request.
   */
  private watches = true;
  private watching: OpenWatch | undefined;

  constructor(private readonly opts: RobotClientOptions) {
    this.http = new HttpClient(opts.server, opts.ca);
  }

  close(): void {
    this.watching?.abort.abort();
    this.http.close();
  }

  /** The server's idea of now, as far as this robot can tell. */
  serverNow(): number {
    return Date.now() + this.clockSkewMs;
  }

  private observe(res: HttpResponse): void {
    const date = res.headers.date;
    if (!date) return;
    const serverMs = Date.parse(date);
    if (Number.isNaN(serverMs)) return;
    // `Date` has one-second resolution: the server's time lies in [serverMs, serverMs + 1000).
    this.clockSkewMs = Math.round(serverMs + 500 - res.receivedAt);
    this.skewKnown = true;
  }

  private async send(...args: Parameters<HttpClient['request']>): Promise<HttpResponse> {
    const res = await this.http.request(...args);
    this.observe(res);
    return res;
  }

  /**
   * Logs in with a fresh assertion. Throws RefusedError when the server refuses the device itself. With
   * `withBundle`, asks for the bundle in the same answer and returns it (undefined from a server before that).
   */
  async login(signal?: AbortSignal, withBundle = false): Promise<unknown> {
    const hadSkew = this.skewKnown;
    const attempt = (): Promise<HttpResponse> => {
      const json: RobotAuthRequest = { assertion: signAssertion(this.opts.key, this.opts.robot, this.serverNow()) };
      if (withBundle && this.loginCarriesBundle) json.bundle = true;
      return this.send({
        method: 'POST',
        path: 'v1/auth/robot',
        json,
        timeoutMs: REQUEST_TIMEOUT_MS,
        signal,
        maxBytes: json.bundle ? MAX_BUNDLE_BYTES : undefined,
      });
    };
    let res = await attempt();
    if (res.status === 422 && withBundle && this.loginCarriesBundle) {
      // A server from before `bundle` refuses the unknown field: log in as it knows, fetch the bundle apart.
      this.loginCarriesBundle = false;
      res = await attempt();
    }
    if ((res.status === 401 || res.status === 403) && !hadSkew && Math.abs(this.clockSkewMs) > SKEW_RETRY_MS) {
      // First contact with a clock far off (a robot that booted in 1970): sign again on the server's time.
      this.opts.log.warn(`clock differs from the server's by ${Math.round(this.clockSkewMs / 1000)} s: signing the login on the server's time`);
      res = await attempt();
    }
    if (res.status === 401 || res.status === 403) {
      const err = statusError(res, 'login');
      throw new RefusedError(
        `the server refused this device (${err.code ?? res.status}${err.serverMessage ? `: ${err.serverMessage}` : ''}): ` +
          'it was revoked or deleted; enroll it again',
      );
    }
    if (res.status !== 200) throw statusError(res, 'login');
    const body = parseJson(res) as Partial<RobotAuthResponse> | undefined;
    if (typeof body?.token !== 'string' || body.token.length === 0) throw new HttpStatusError(res.status, 'bad-response', 'no token in the answer', 'login');
    const expiresAtMs = typeof body.expiresAt === 'string' ? Date.parse(body.expiresAt) : Number.NaN;
    this.token = { value: body.token, expiresAtMs: Number.isNaN(expiresAtMs) ? this.serverNow() + 300_000 : expiresAtMs };
    this.opts.log.debug(`logged in as ${this.opts.robot}, token valid until ${new Date(this.token.expiresAtMs).toISOString()}`);
    if (!withBundle || typeof body.bundle !== 'object' || body.bundle === null) return undefined;
    this.reportOnNextContact = reportOnNextContact(res.headers);
    return body.bundle;
  }

  /** Logs in when there is no token or it would expire within `needMs` (server clock). */
  private async ensureToken(needMs: number, signal?: AbortSignal): Promise<string> {
    if (this.tokenShort(needMs)) await this.login(signal);
    return this.token!.value;
  }

  private tokenShort(needMs: number): boolean {
    return !this.token || this.token.expiresAtMs - this.serverNow() < needMs + TOKEN_MARGIN_MS;
  }

  /** Runs an authenticated request; on 401 logs in again once (the token expired or was invalidated). */
  private async authed(
    build: (token: string) => Parameters<HttpClient['request']>[0],
    needMs: number,
    signal?: AbortSignal,
  ): Promise<HttpResponse> {
    let res = await this.send(build(await this.ensureToken(needMs, signal)));
    if (res.status === 401) {
      this.token = undefined;
      res = await this.send(build(await this.ensureToken(needMs, signal)));
    }
    return res;
  }

  /**
   * Fetches the bundle. With `etag`, the server answers 304 when nothing changed; with `waitS` > 0 it holds
   * the request until the revision changes (long poll).
   */
  async fetchBundle(opts: { etag?: string; waitS: number; signal?: AbortSignal }): Promise<BundleFetch> {
    // Only a quoted revision of letters and digits is ever sent back (watch.ts builds it from a checked one).
    const sent = opts.etag !== undefined && /^"[A-Za-z0-9]{1,128}"$/.test(opts.etag) ? opts.etag : undefined;
    const waitS = sent ? Math.min(Math.max(Math.floor(opts.waitS), 0), 60) : 0;
    if (!sent && this.tokenShort(0)) {
      // A robot that holds nothing and has to log in anyway (its boot): one request brings both.
      const body = await this.login(opts.signal, true);
      if (body !== undefined) return { changed: true, body, etag: undefined };
    }
    if (waitS > 0 && this.watches) return this.fromWatch(sent!, waitS, opts.signal);
    const res = await this.authed(
      (token) => ({
        method: 'GET',
        path: waitS > 0 ? `v1/robot/bundle?wait=${waitS}` : 'v1/robot/bundle',
        headers: { authorization: `Bearer ${token}`, ...(sent ? { 'if-none-match': sent } : {}) },
        timeoutMs: REQUEST_TIMEOUT_MS + waitS * 1000,
        signal: opts.signal,
        maxBytes: MAX_BUNDLE_BYTES,
      }),
      waitS * 1000,
      opts.signal,
    );
    if (res.status === 304) return { changed: false };
    if (res.status !== 200) throw statusError(res, 'bundle');
    this.reportOnNextContact = reportOnNextContact(res.headers);
    return { changed: true, body: parseJson(res), etag: typeof res.headers.etag === 'string' ? res.headers.etag : undefined };
  }

  /**
   * The next bundle of the watch that went on from `etag`, opened if there is none; `{ changed: false }` when it
   * ended (the next contact, as a poll's 304 is). A server from before watches answers the watch as a poll: that
   * answer is taken as one, and the robot polls from then on.
   */
  private async fromWatch(etag: string, waitS: number, signal?: AbortSignal): Promise<BundleFetch> {
    let w = this.watching;
    // The loop holds another revision than this watch went on from (it refused a bundle, or started over).
    if (w && w.etag !== etag) {
      w.abort.abort();
      w = this.watching = undefined;
    }
    w ??= await this.openWatch(etag, waitS, signal);
    while (w.queue.length === 0 && !w.ended && !signal?.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          signal?.removeEventListener('abort', done);
          resolve();
        };
        w!.wake = done;
        signal?.addEventListener('abort', done, { once: true });
      });
    }
    if (signal?.aborted) throw new NetworkError('bundle: aborted', 'ABORT_ERR');
    const next = w.queue.shift();
    if (next) {
      if (next.changed) w.etag = etagOf(next.body) ?? '';
      return next;
    }
    if (this.watching === w) this.watching = undefined;
    if (w.error !== undefined) throw w.error;
    return { changed: false };
  }

  private async openWatch(etag: string, waitS: number, signal?: AbortSignal): Promise<OpenWatch> {
    const abort = new AbortController();
    const w: OpenWatch = { etag, queue: [], ended: false, abort };
    const both = signal ? AbortSignal.any([signal, abort.signal]) : abort.signal;
    const push = (item: BundleFetch) => {
      w.queue.push(item);
      w.wake?.();
    };
    const open = async (token: string): Promise<WatchResponse> => {
      const res = await this.http.watch(
        {
          method: 'GET',
          path: `v1/robot/bundle?watch=${waitS}`,
          headers: { authorization: `Bearer ${token}`, 'if-none-match': etag },
          timeoutMs: REQUEST_TIMEOUT_MS + waitS * 1000,
          signal: both,
          maxBytes: MAX_BUNDLE_BYTES,
        },
        (line) => {
          let body: unknown;
          try {
            body = JSON.parse(line.toString('utf8'));
          } catch {
            body = undefined;
          }
          push({ changed: true, body, etag: undefined });
        },
      );
      this.observe(res);
      return res;
    };
    let res = await open(await this.ensureToken(waitS * 1000, signal));
    if (res.status === 401) {
      this.token = undefined;
      res = await open(await this.ensureToken(waitS * 1000, signal));
    }
    if (!res.ended) {
      if (res.status !== 200 && res.status !== 304) throw statusError(res, 'bundle');
      // Answered at once, as a poll with no wait: a server from before watches. The answer is used as such.
      this.watches = false;
      this.opts.log.info('the server does not offer watches: long-polling for changes');
      if (res.status === 304) w.queue.push({ changed: false });
      else {
        this.reportOnNextContact = reportOnNextContact(res.headers);
        w.queue.push({ changed: true, body: parseJson(res), etag: undefined });
      }
      w.ended = true;
      return w;
    }
    this.reportOnNextContact = reportOnNextContact(res.headers);
    res.ended.then(
      () => {
        w.ended = true;
        w.wake?.();
      },
      (err: unknown) => {
        w.ended = true;
        w.error = err;
        w.wake?.();
      },
    );
    this.watching = w;
    return w;
  }

  /** An authenticated JSON POST (small answers only). */
  private post(path: string, json: unknown, signal?: AbortSignal): Promise<HttpResponse> {
    return this.authed(
      (token) => ({ method: 'POST', path, headers: { authorization: `Bearer ${token}` }, json, timeoutMs: REQUEST_TIMEOUT_MS, signal, maxBytes: 1024 * 1024 }),
      0,
      signal,
    );
  }

  /** Asks for a certificate for the key that signed `req.csr`. A 429 throws HttpStatusError with its Retry-After. */
  async requestIdentity(req: IdentityRequest, signal?: AbortSignal): Promise<IdentityOutcome> {
    const res = await this.post('v1/robot/identity', req, signal);
    if (res.status === 404) return { kind: 'unbound' };
    if (res.status === 409) {
      const err = statusError(res, 'identity');
      if (err.code === 'key-reused') return { kind: 'key-reused' };
      throw err;
    }
    if (res.status !== 201 && res.status !== 200) throw statusError(res, 'identity');
    const body = parseJson(res) as Partial<IdentityResponse> | undefined;
    const ok =
      typeof body?.certificate === 'string' &&
      typeof body.serial === 'string' &&
      typeof body.notAfter === 'string' &&
      !Number.isNaN(Date.parse(body.notAfter)) &&
      (typeof body.revision === 'string' || typeof body.revision === 'number');
    if (!ok) throw new HttpStatusError(res.status, 'bad-response', 'incomplete identity answer', 'identity');
    return { kind: 'issued', identity: body as IdentityResponse };
  }

  async report(report: RobotReport, signal?: AbortSignal): Promise<void> {
    const res = await this.post('v1/robot/report', report, signal);
    if (res.status < 200 || res.status > 299) throw statusError(res, 'report');
  }
}
