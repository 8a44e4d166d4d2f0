/**
 * One simulated robot, behaving on the wire like `enclave-agent`: its own P-256 device key, enrolled with a
 * one-time token, device login with a fresh signed assertion (`signAssertion` from the agent), the bundle
 * with `If-None-Match` and long polls (`?wait=`), the agent's HTTP client (`client/common/http.ts`: pinned
 * CA, one keep-alive connection per robot) and its retry policy (`retryDelay` in client/agent/backoff.ts:
 * full jitter, 30 s cap while the server is unreachable, a server's `Retry-After` on 429/503 honoured and
 * spread).
 *
 * After each bundle that changed it reports what it holds (`POST /v1/robot/report`), as the agent does: at
 * once, or after the next answer when the server asked for that (`Enclave-Report: next-contact`), and again
 * after the next answer when it failed.
 *
 * What is skipped: writing the files to a RAM disk, and by default the agent's full bundle check
 * (`parseBundle` parses every certificate; `validate: true` turns it on). They cost the robot, not the server.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { Backoff, classifyTrouble, sleep } from '../../client/agent/backoff.js';
import { parseBundle } from '../../client/agent/bundle.js';
import { signAssertion } from '../../client/agent/robot-client.js';
import { MIN_POLL_INTERVAL_MS } from '../../client/agent/watch.js';
import { buildCsr, newIdentityKey } from '../../client/agent/csr.js';
import { HttpClient, NetworkError, parseJson, type HttpResponse } from '../../client/common/http.js';
import { reportOnNextContact, type Bundle, type EnrollRequest, type IdentityRequest, type RobotAuthRequest, type RobotAuthResponse, type RobotReport } from '../../client/common/robot-wire.js';
import { retryAfterMs, type Tally } from './stats.js';
import type { SecureContext } from 'node:tls';

/** The agent's request timeout (robot-client.ts), plus the long-poll wait. */
export const REQUEST_TIMEOUT_MS = 15_000;
/** The agent's default --backoff-base and --backoff-max. */
const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 300_000;
/** The agent renews its token when less than this (plus the poll wait) is left. */
const TOKEN_MARGIN_MS = 60_000;

export interface RobotConfig {
  url: string;
  caPem: string;
  /** The CA parsed once, shared by every robot of a worker: each robot still makes its own TLS connections. */
  secureContext?: SecureContext;
  pollWaitS: number;
  validate: boolean;
}

/** Why an exchange did not give what was asked: `http-503`, `ETIMEDOUT`, `ECONNRESET`, ... */
export function failureKind(err: unknown): string {
  if (err instanceof NetworkError) return err.code ?? 'network';
  if (err instanceof BadAnswer) return err.kind;
  return 'other';
}

export class BadAnswer extends Error {
  constructor(
    readonly kind: string,
    readonly retryAfterMs?: number,
  ) {
    super(kind);
  }
}

/** How long to wait before trying again, decided as the agent decides it. */
export function retryDelay(err: unknown, backoff: Backoff): number {
  if (err instanceof BadAnswer) {
    const unreachable = /-http-50[234]$/.test(err.kind);
    return backoff.next({ kind: unreachable ? 'unreachable' : 'failing', retryAfterMs: err.retryAfterMs });
  }
  return backoff.next(classifyTrouble(err));
}

function refuse(res: HttpResponse, what: string): BadAnswer {
  return new BadAnswer(`${what}-http-${res.status}`, res.status === 429 || res.status === 503 ? retryAfterMs(res.headers['retry-after'], Date.now()) : undefined);
}

/** One answer to a long poll, for counting who a change woke. */
export interface PollAnswer {
  startedAt: number;
  at: number;
  status: number;
}

export class SimRobot {
  key: KeyObject | undefined;
  client: HttpClient | undefined;
  token: { value: string; expiresAtMs: number } | undefined;
  etag: string | undefined;
  revision: string | undefined;
  /** When the robot last received a changed bundle. */
  changedAt = 0;
  answers: PollAnswer[] = [];
  errors: Tally = {};
  /** A poll is in flight with an etag: the server is (or soon will be) holding it. */
  waiting = false;
  /** Per-robot enclaves of the last bundle that carry no certificate for this robot yet. */
  needIdentity: { keystore: string; enclave: string }[] = [];
  /** What the robot would report: the enclaves of its last bundle. */
  held: RobotReport['enclaves'] = [];
  /** A bundle changed and the server has not heard about it yet. */
  reportPending = false;
  /** The server asked for that report on the next contact, not after this answer (as the agent obeys it). */
  private reportOnNextContact = false;
  private readonly backoff = new Backoff(BACKOFF_BASE_MS, BACKOFF_MAX_MS);

  constructor(
    readonly name: string,
    private readonly cfg: RobotConfig,
  ) {}

  get url(): string {
    return this.cfg.url;
  }

  /** `enclave-agent enroll`: a fresh P-256 key, its public half registered with the one-time token. */
  async enroll(http: HttpClient, token: string): Promise<void> {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const body: EnrollRequest = { token, publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(), agentVersion: 'bench-fleet' };
    const res = await http.request({ method: 'POST', path: 'v1/enroll', json: body, timeoutMs: 60_000 });
    if (res.status !== 201 && res.status !== 200) throw refuse(res, 'enroll');
    this.key = privateKey;
  }

  /** Drops the connection: the next request opens a new TLS connection, as a robot that booted does. */
  reconnect(): void {
    this.client?.close();
    this.client = new HttpClient(this.cfg.url, this.cfg.caPem, this.cfg.secureContext);
    this.token = undefined;
    this.etag = undefined;
    this.revision = undefined;
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }

  /** With `withBundle`, the bundle comes in the login's answer (as the agent asks when it holds none). */
  async login(withBundle = false): Promise<{ body: Partial<Bundle> | undefined; receivedAt: number; reportLater: boolean } | undefined> {
    const json: RobotAuthRequest = { assertion: signAssertion(this.key!, this.name, Date.now()), ...(withBundle ? { bundle: true } : {}) };
    const res = await this.client!.request({
      method: 'POST',
      path: 'v1/auth/robot',
      json,
      timeoutMs: REQUEST_TIMEOUT_MS,
      maxBytes: withBundle ? 64 * 1024 * 1024 : undefined,
    });
    if (res.status !== 200) throw refuse(res, 'login');
    const body = parseJson(res) as Partial<RobotAuthResponse> | undefined;
    if (typeof body?.token !== 'string') throw new BadAnswer('login-no-token');
    const exp = typeof body.expiresAt === 'string' ? Date.parse(body.expiresAt) : Number.NaN;
    this.token = { value: body.token, expiresAtMs: Number.isNaN(exp) ? Date.now() + 300_000 : exp };
    if (!withBundle) return undefined;
    if (typeof body.bundle !== 'object') throw new BadAnswer('login-no-bundle');
    return { body: body.bundle, receivedAt: res.receivedAt, reportLater: reportOnNextContact(res.headers) };
  }

  /**
   * One bundle request (login first when the token is missing or about to run out; again once on 401).
   * Returns true when a new bundle arrived.
   */
  async fetch(waitS: number): Promise<boolean> {
    const wait = this.etag ? waitS : 0;
    if (!this.token || this.token.expiresAtMs - Date.now() < wait * 1000 + TOKEN_MARGIN_MS) {
      const boot = await this.login(!this.etag);
      if (boot) return this.take(boot.body, boot.receivedAt, boot.reportLater);
    }
    const ask = (): Promise<HttpResponse> =>
      this.client!.request({
        method: 'GET',
        path: wait > 0 ? `v1/robot/bundle?wait=${wait}` : 'v1/robot/bundle',
        headers: { authorization: `Bearer ${this.token!.value}`, ...(this.etag ? { 'if-none-match': this.etag } : {}) },
        timeoutMs: REQUEST_TIMEOUT_MS + wait * 1000,
        maxBytes: 64 * 1024 * 1024,
      });
    const startedAt = Date.now();
    this.waiting = wait > 0;
    let res: HttpResponse;
    try {
      res = await ask();
      if (res.status === 401) {
        this.token = undefined;
        await this.login();
        res = await ask();
      }
    } finally {
      this.waiting = false;
    }
    if (wait > 0) this.answers.push({ startedAt, at: res.receivedAt, status: res.status });
    if (res.status === 304) return false;
    if (res.status !== 200) throw refuse(res, 'bundle');
    return this.take(parseJson(res) as Partial<Bundle> | undefined, res.receivedAt, reportOnNextContact(res.headers));
  }

  /**
   * What the agent does once it holds a bundle: a watch (`?watch=S`), each line a bundle taken as it comes (one
   * answer, however many bundles it brings); its end is the next contact. A report the server did not ask to
   * be put off goes at once, beside the watch, as the agent's does.
   */
  async watch(waitS: number): Promise<void> {
    if (!this.etag) {
      await this.fetch(waitS);
      return;
    }
    if (!this.token || this.token.expiresAtMs - Date.now() < waitS * 1000 + TOKEN_MARGIN_MS) await this.login();
    const startedAt = Date.now();
    let reportLater = false;
    const open = () =>
      this.client!.watch(
        {
          method: 'GET',
          path: `v1/robot/bundle?watch=${waitS}`,
          headers: { authorization: `Bearer ${this.token!.value}`, 'if-none-match': this.etag! },
          timeoutMs: REQUEST_TIMEOUT_MS + waitS * 1000,
          maxBytes: 64 * 1024 * 1024,
        },
        (line) => {
          const at = Date.now();
          this.answers.push({ startedAt, at, status: 200 });
          let body: Partial<Bundle> | undefined;
          try {
            body = JSON.parse(line.toString('utf8')) as Partial<Bundle>;
          } catch {
            body = undefined;
          }
          try {
            if (this.take(body, at, reportLater) && !reportLater) void this.reportIfPending();
          } catch (err) {
            const kind = failureKind(err);
            this.errors[kind] = (this.errors[kind] ?? 0) + 1;
          }
        },
      );
    this.waiting = true;
    try {
      let res = await open();
      if (res.status === 401) {
        this.token = undefined;
        await this.login();
        res = await open();
      }
      if (!res.ended) throw refuse(res, 'bundle');
      reportLater = reportOnNextContact(res.headers);
      await res.ended;
    } finally {
      this.waiting = false;
    }
    // The watch's end is the next contact: a report put off until now goes.
    this.reportOnNextContact = false;
  }

  /** Takes a bundle the server sent: true when its revision is new. */
  private take(body: Partial<Bundle> | undefined, receivedAt: number, reportLater: boolean): boolean {
    this.needIdentity = (body?.keystores ?? []).flatMap((k) =>
      k.enclaves.filter((e) => e.identity === 'per-robot' && e.files['cert.pem'] === undefined).map((e) => ({ keystore: k.name, enclave: e.path })),
    );
    const revision = this.cfg.validate ? String(parseBundle(body).revision) : typeof body?.revision === 'string' ? body.revision : undefined;
    if (!revision || !/^[A-Za-z0-9]{1,128}$/.test(revision)) throw new BadAnswer('bundle-bad-revision');
    this.etag = `"${revision}"`;
    if (revision === this.revision) return false;
    this.revision = revision;
    this.changedAt = receivedAt;
    this.held = (body?.keystores ?? []).flatMap((k) => k.enclaves.map((e) => ({ keystore: k.name, path: e.path, notAfter: e.notAfter })));
    this.reportPending = true;
    this.reportOnNextContact = reportLater;
    return true;
  }

  /**
   * The agent's report after a bundle that changed (`sendReport`): not part of the time to the bundle, and a
   * failure is counted (`report-…`) and tried again after the next answer, as the agent does.
   */
  async reportIfPending(): Promise<void> {
    if (!this.reportPending || !this.token) return;
    if (this.reportOnNextContact) {
      // Called after every answer: this one brought the bundle, the next answer sends the report.
      this.reportOnNextContact = false;
      return;
    }
    const json: RobotReport = { revision: this.revision ?? null, filesystem: 'tmpfs', clockSkewMs: 0, agentVersion: 'bench-fleet', enclaves: this.held };
    try {
      const res = await this.client!.request({
        method: 'POST',
        path: 'v1/robot/report',
        headers: { authorization: `Bearer ${this.token.value}` },
        json,
        timeoutMs: REQUEST_TIMEOUT_MS,
      });
      if (res.status !== 204) throw refuse(res, 'report');
      this.reportPending = false;
    } catch (err) {
      const kind = err instanceof BadAnswer ? err.kind : `report-${failureKind(err)}`;
      this.errors[kind] = (this.errors[kind] ?? 0) + 1;
    }
  }

  /**
   * What the agent does for each per-robot enclave without a certificate: a fresh P-256 key, a CSR signed
   * by it (the agent's own builder) and `POST /v1/robot/identity`. The key is dropped: only the server's
   * side is measured.
   */
  async requestIdentities(): Promise<void> {
    for (const need of [...this.needIdentity]) {
      const body: IdentityRequest = { ...need, csr: buildCsr(newIdentityKey().privateKey, need.enclave) };
      const res = await this.client!.request({
        method: 'POST',
        path: 'v1/robot/identity',
        headers: { authorization: `Bearer ${this.token!.value}` },
        json: body,
        timeoutMs: REQUEST_TIMEOUT_MS,
      });
      if (res.status !== 201) throw refuse(res, 'identity');
      this.needIdentity.splice(this.needIdentity.indexOf(need), 1);
    }
  }

  /**
   * Until `succeed` resolves or `giveUpAt` passes, tries `attempt`, retrying like the agent. Counts each
   * failed attempt by kind. Returns ms from the first attempt to success, or undefined (never served).
   */
  async untilServed(attempt: () => Promise<void>, giveUpAt: number, stats: { attempts: number; longestMs: number }): Promise<number | undefined> {
    const first = Date.now();
    this.backoff.reset();
    for (;;) {
      const t0 = Date.now();
      stats.attempts++;
      try {
        await attempt();
        stats.longestMs = Math.max(stats.longestMs, Date.now() - t0);
        return Date.now() - first;
      } catch (err) {
        stats.longestMs = Math.max(stats.longestMs, Date.now() - t0);
        const kind = failureKind(err);
        this.errors[kind] = (this.errors[kind] ?? 0) + 1;
        const delay = retryDelay(err, this.backoff);
        if (Date.now() + delay > giveUpAt) return undefined;
        await sleep(delay);
      }
    }
  }

  /** The agent's watch loop: watches, at most one request start per MIN_POLL_INTERVAL_MS, back off on trouble. */
  async pollLoop(signal: AbortSignal): Promise<void> {
    let lastStart = -Infinity;
    this.backoff.reset();
    while (!signal.aborted) {
      const gap = lastStart + MIN_POLL_INTERVAL_MS - Date.now();
      if (gap > 0) await sleep(gap, signal);
      if (signal.aborted) return;
      lastStart = Date.now();
      try {
        await this.watch(this.cfg.pollWaitS);
        this.backoff.reset();
        await this.reportIfPending();
      } catch (err) {
        if (signal.aborted) return;
        const kind = failureKind(err);
        this.errors[kind] = (this.errors[kind] ?? 0) + 1;
        this.etag = undefined; // as the agent: ask afresh after trouble
        await sleep(retryDelay(err, this.backoff), signal);
      }
    }
  }
}
