/**
 * The CLI's view of the HTTP API. JSON calls go through the shared pinned-CA client
 * (`client/common/http.ts`); uploads and downloads of archives stream here instead, because they need
 * binary bodies, progress and no size cap on the answer (an export is written straight to a file).
 * Both pin the CA the same way: it is the only trusted root and verification cannot be turned off.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { HttpClient, NetworkError, parseJson, type HttpResponse } from '../common/http.js';
import { CtlError, EXIT_REFUSED, UsageError, fromResponse, unreachable } from './errors.js';
import type { Progress } from './progress.js';

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface CallOptions {
  json?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  /** Batches make keys; give them longer than a lookup. */
  timeoutMs?: number;
}

/** Raw transfers only time out when the connection goes quiet, not on total duration (big keystores). */
const IDLE_TIMEOUT_MS = 120_000;
const JSON_TIMEOUT_MS = 120_000;
/** An audit page of 10 000 entries with details is a few MB; this is the ceiling for any JSON answer. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const UPLOAD_CHUNK = 64 * 1024;

export const keystoreUrl = (ks: string): string => `v1/keystores/${encodeURIComponent(ks)}`;

/** `{path}` in enclave URLs is the ROS path without its leading slash, each segment escaped. */
export function enclaveUrl(ks: string, enclave: string): string {
  const rel = enclave.replace(/^\/+/, '');
  if (rel === '') throw new UsageError(`enclave path ${JSON.stringify(enclave)} is empty`);
  return `${keystoreUrl(ks)}/enclaves/${rel.split('/').map(encodeURIComponent).join('/')}`;
}

function withQuery(p: string, query: CallOptions['query']): string {
  if (!query) return p;
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s ? `${p}?${s}` : p;
}

export class Api {
  private readonly client: HttpClient;

  constructor(
    readonly server: string,
    private readonly ca: string | undefined,
    private readonly token?: string,
    /** When the token runs out, to word a 401 as "expired" or "no longer valid". */
    private readonly expiresAt?: string,
  ) {
    try {
      this.client = new HttpClient(server, ca);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }

  close(): void {
    this.client.close();
  }

  private authHeaders(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** A JSON request; resolves to the parsed answer (undefined for 204), throws CtlError otherwise. */
  async call<T>(method: Method, p: string, opts: CallOptions = {}): Promise<T> {
    let res: HttpResponse;
    try {
      res = await this.client.request({
        method,
        path: withQuery(p, opts.query),
        headers: this.authHeaders(),
        json: opts.json,
        timeoutMs: opts.timeoutMs ?? JSON_TIMEOUT_MS,
        maxBytes: MAX_JSON_BYTES,
      });
    } catch (err) {
      if (err instanceof NetworkError) throw this.networkError(err.code, err.message);
      throw err;
    }
    return this.answer<T>(res.status, res.body, res.headers);
  }

  private answer<T>(status: number, body: Buffer, headers: http.IncomingHttpHeaders): T {
    const parsed = parseJson({ status, headers, body, sentAt: 0, receivedAt: 0 });
    if (status >= 200 && status < 300) {
      if (body.length > 0 && parsed === undefined) throw new CtlError(`${this.server} answered with something that is not JSON`, EXIT_REFUSED);
      return parsed as T;
    }
    const retry = headers['retry-after'];
    throw fromResponse(status, parsed, this.server, typeof retry === 'string' ? retry : undefined, this.expiresAt);
  }

  private networkError(code: string | undefined, message: string): CtlError {
    const i = message.indexOf(': ');
    return unreachable(this.server, code, i >= 0 ? message.slice(i + 2) : message);
  }

  private rawRequest(method: Method, p: string, headers: Record<string, string>): http.ClientRequest {
    const url = new URL(p, this.client.base);
    const options: https.RequestOptions = { method, headers: { ...this.authHeaders(), ...headers }, agent: false };
    if (url.protocol === 'https:') {
      options.ca = this.ca;
      options.rejectUnauthorized = true;
      return https.request(url, options);
    }
    return http.request(url, options);
  }

  /** Sends a binary body (a .tar.gz, an XML file) and parses the JSON answer; `progress` counts bytes sent. */
  upload<T>(method: Method, p: string, body: Buffer, contentType: string, progress?: Progress): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const req = this.rawRequest(method, p, { 'content-type': contentType, 'content-length': String(body.length), accept: 'application/json' });
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        req.destroy();
        reject(err);
      };
      req.setTimeout(IDLE_TIMEOUT_MS, () => fail(unreachable(this.server, 'ETIMEDOUT', `quiet for ${IDLE_TIMEOUT_MS / 1000} s`)));
      req.on('error', (err: NodeJS.ErrnoException) => fail(unreachable(this.server, err.code, err.message)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_JSON_BYTES) fail(new CtlError(`${this.server} sent an oversized answer`, EXIT_REFUSED));
          else chunks.push(c);
        });
        res.on('error', (err: NodeJS.ErrnoException) => fail(unreachable(this.server, err.code, err.message)));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          try {
            resolve(this.answer<T>(res.statusCode ?? 0, Buffer.concat(chunks), res.headers));
          } catch (err) {
            reject(err);
          }
        });
      });
      let sent = 0;
      // Writing in slices with back-pressure is what makes the byte count track the network.
      const pump = (): void => {
        while (sent < body.length) {
          const chunk = body.subarray(sent, sent + UPLOAD_CHUNK);
          sent += chunk.length;
          const more = req.write(chunk);
          progress?.update(sent);
          if (!more) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
  }

  /**
   * Streams a GET answer into `dest` (or stdout when dest is `-`). The file is written 0600 under a
   * temporary name and renamed at the end, so a failed download never leaves a truncated archive behind.
   * Resolves to the number of bytes written.
   */
  download(p: string, dest: string, progress?: Progress): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const req = this.rawRequest('GET', p, { accept: 'application/gzip, application/json' });
      let settled = false;
      let tmp: string | undefined;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        req.destroy();
        if (tmp) fs.rmSync(tmp, { force: true });
        reject(err);
      };
      req.setTimeout(IDLE_TIMEOUT_MS, () => fail(unreachable(this.server, 'ETIMEDOUT', `quiet for ${IDLE_TIMEOUT_MS / 1000} s`)));
      req.on('error', (err: NodeJS.ErrnoException) => fail(unreachable(this.server, err.code, err.message)));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            try {
              this.answer(status, Buffer.concat(chunks), res.headers);
              fail(new CtlError(`${this.server} answered HTTP ${status}`, EXIT_REFUSED));
            } catch (err) {
              fail(err);
            }
          });
          return;
        }
        const total = Number(res.headers['content-length']);
        if (Number.isFinite(total) && total > 0) progress?.setTotal(total);
        let out: NodeJS.WritableStream;
        if (dest === '-') {
          out = process.stdout;
        } else {
          tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${process.pid}.part`);
          try {
            out = fs.createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
          } catch (err) {
            fail(err);
            return;
          }
        }
        let bytes = 0;
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          progress?.update(bytes);
          if (!out.write(c)) {
            res.pause();
            out.once('drain', () => res.resume());
          }
        });
        res.on('error', (err: NodeJS.ErrnoException) => fail(unreachable(this.server, err.code, err.message)));
        out.on('error', (err) => fail(err));
        res.on('end', () => {
          if (settled) return;
          if (Number.isFinite(total) && bytes !== total) {
            fail(new CtlError(`download from ${this.server} ended early (${bytes} of ${total} bytes)`, EXIT_REFUSED));
            return;
          }
          if (dest === '-') {
            settled = true;
            resolve(bytes);
            return;
          }
          const file = out as fs.WriteStream;
          file.end(() => {
            if (settled) return;
            try {
              fs.renameSync(tmp!, dest);
              settled = true;
              resolve(bytes);
            } catch (err) {
              fail(err);
            }
          });
        });
      });
      req.end();
    });
  }
}
