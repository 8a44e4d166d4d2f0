/**
 * A stand-in for the robot half of the server's HTTP API, written from CONTRACT.md (enroll, robot login with
 * an ES256 device assertion, bundle with ETag / If-None-Match / ?wait= long poll, report). It lets the agent's
 * tests run over real HTTPS with a pinned CA before (and independently of) the real server; the same scenarios
 * run against the real server in agent-e2e.test.ts.
 *
 * It checks what the agent sends as strictly as the contract asks: signature, `aud`, `exp - iat <= 300`,
 * unique `jti`, bearer token on every robot call.
 */
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TestPki } from './agent-tls.js';

export interface StubEnclave {
  path: string;
  notAfter: string;
  files: Record<string, string>;
}
export interface StubKeystore {
  name: string;
  enclaves: StubEnclave[];
}

interface Robot {
  name: string;
  labels: Record<string, string>;
  publicKey?: KeyObject;
  deleted: boolean;
  revision: number;
  keystores: StubKeystore[];
}

export interface StubOptions {
  pki?: TestPki; // HTTPS when given, else plain HTTP on loopback
  port?: number;
  tokenTtlS?: number;
}

function b64json(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export class StubServer {
  readonly robots = new Map<string, Robot>();
  readonly reports: { robot: string; body: Record<string, unknown>; at: number }[] = [];
  readonly requests: { method: string; path: string; at: number }[] = [];
  /** Added to the server's clock (Date header, assertion checks). */
  dateOffsetMs = 0;
  logins = 0;
  refusedLogins = 0;
  private readonly enrollTokens = new Map<string, string>();
  private readonly tokens = new Map<string, { robot: string; expiresAtMs: number }>();
  private readonly jtis = new Set<string>();
  private readonly changes = new EventEmitter();
  private server!: http.Server;
  port = 0;

  private constructor(private readonly opts: StubOptions) {
    this.changes.setMaxListeners(100);
  }

  static async start(opts: StubOptions = {}): Promise<StubServer> {
    const stub = new StubServer(opts);
    await stub.listen(opts.port ?? 0);
    return stub;
  }

  get url(): string {
    return `${this.opts.pki ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  now(): number {
    return Date.now() + this.dateOffsetMs;
  }

  async listen(port: number): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      void this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.send(res, 500, { error: { code: 'internal', message: String(err) } });
      });
    };
    this.server = this.opts.pki
      ? https.createServer({ key: this.opts.pki.serverKey, cert: this.opts.pki.serverCert }, handler)
      : http.createServer(handler);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Stops listening and drops every connection (the "server is down" case). */
  async stop(): Promise<void> {
    this.changes.emit('shutdown');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  createRobot(name: string, labels: Record<string, string> = {}): string {
    this.robots.set(name, { name, labels, deleted: false, revision: 1, keystores: [] });
    const token = randomBytes(16).toString('hex');
    this.enrollTokens.set(token, name);
    return token;
  }

  /** Replaces what the robot's bundle holds; long polls return at once. */
  setKeystores(robot: string, keystores: StubKeystore[]): void {
    const r = this.robots.get(robot)!;
    r.keystores = keystores;
    r.revision++;
    this.changes.emit('change', robot);
  }

  /** Deletes the robot: its tokens stop working and its device can no longer log in. */
  deleteRobot(robot: string): void {
    this.robots.get(robot)!.deleted = true;
    for (const [t, v] of this.tokens) if (v.robot === robot) this.tokens.delete(t);
    this.changes.emit('change', robot);
  }

  /** Makes every robot token invalid (as after a server restart with a new signing key). */
  dropTokens(): void {
    this.tokens.clear();
  }

  private send(res: http.ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    res.setHeader('Date', new Date(this.now()).toUTCString());
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    if (body === undefined) {
      res.writeHead(status).end();
      return;
    }
    const data = Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(data.length) }).end(data);
  }

  private error(res: http.ServerResponse, status: number, code: string, message: string): void {
    this.send(res, status, { error: { code, message } });
  }

  private async body(req: http.IncomingMessage): Promise<Record<string, unknown>> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    } catch {
      return {};
    }
  }

  private robotOf(req: http.IncomingMessage): Robot | undefined {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const t = m ? this.tokens.get(m[1]!) : undefined;
    if (!t || t.expiresAtMs <= this.now()) return undefined;
    const robot = this.robots.get(t.robot);
    return robot && !robot.deleted ? robot : undefined;
  }

  private bundleOf(robot: Robot): unknown {
    return { revision: String(robot.revision), robot: { name: robot.name, labels: robot.labels }, keystores: robot.keystores };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({ method: req.method ?? '', path: url.pathname, at: Date.now() });
    const route = `${req.method} ${url.pathname}`;
    if (route === 'POST /v1/enroll') {
      const body = await this.body(req);
      const name = typeof body.token === 'string' ? this.enrollTokens.get(body.token) : undefined;
      if (!name) return this.error(res, 401, 'invalid-enrollment-token', 'enrollment token invalid, expired or used');
      let key: KeyObject;
      try {
        key = createPublicKey(String(body.publicKey));
        if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('curve');
      } catch {
        return this.error(res, 422, 'invalid-public-key', 'publicKey must be a P-256 SPKI PEM');
      }
      this.enrollTokens.delete(String(body.token));
      const robot = this.robots.get(name)!;
      robot.publicKey = key;
      return this.send(res, 201, { robot: { name: robot.name, labels: robot.labels } });
    }
    if (route === 'POST /v1/auth/robot') {
      this.logins++;
      const body = await this.body(req);
      const refuse = (why: string): void => {
        this.refusedLogins++;
        this.error(res, 401, 'invalid-assertion', why);
      };
      const parts = typeof body.assertion === 'string' ? body.assertion.split('.') : [];
      if (parts.length !== 3) return refuse('malformed assertion');
      const [h, c, s] = parts as [string, string, string];
      const header = b64json(h);
      const claims = b64json(c);
      if (header.alg !== 'ES256' || header.typ !== 'JWT') return refuse('bad header');
      const robot = typeof claims.sub === 'string' ? this.robots.get(claims.sub) : undefined;
      if (!robot?.publicKey || robot.deleted) return refuse('unknown robot');
      const ok = verify('sha256', Buffer.from(`${h}.${c}`), { key: robot.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
      if (!ok) return refuse('bad signature');
      const now = Math.floor(this.now() / 1000);
      const iat = Number(claims.iat);
      const exp = Number(claims.exp);
      if (claims.aud !== 'enclave-server') return refuse('bad audience');
      if (!(exp > now) || !(exp - iat <= 300) || iat > now + 60) return refuse('assertion expired or not yet valid');
      if (typeof claims.jti !== 'string' || this.jtis.has(claims.jti)) return refuse('replayed assertion');
      this.jtis.add(claims.jti);
      const token = randomBytes(24).toString('base64url');
      const expiresAtMs = this.now() + (this.opts.tokenTtlS ?? 900) * 1000;
      this.tokens.set(token, { robot: robot.name, expiresAtMs });
      return this.send(res, 200, { token, expiresAt: new Date(expiresAtMs).toISOString() });
    }
    if (route === 'GET /v1/robot/bundle') {
      let robot = this.robotOf(req);
      if (!robot) return this.error(res, 401, 'unauthorized', 'authentication required');
      const wait = Math.min(Number(url.searchParams.get('wait') ?? 0) || 0, 60);
      const inm = req.headers['if-none-match'];
      if (inm === `"${robot.revision}"` && wait > 0) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(timer);
            this.changes.off('change', onChange);
            this.changes.off('shutdown', done);
            resolve();
          };
          const onChange = (name: string): void => {
            if (name === robot!.name) done();
          };
          const timer = setTimeout(done, wait * 1000);
          this.changes.on('change', onChange);
          this.changes.on('shutdown', done);
          req.socket.once('close', done);
        });
        robot = this.robotOf(req);
        if (!robot) return this.error(res, 401, 'unauthorized', 'authentication required');
      }
      const etag = `"${robot.revision}"`;
      if (inm === etag) return this.send(res, 304, undefined, { etag });
      return this.send(res, 200, this.bundleOf(robot), { etag });
    }
    if (route === 'POST /v1/robot/report') {
      const robot = this.robotOf(req);
      if (!robot) return this.error(res, 401, 'unauthorized', 'authentication required');
      this.reports.push({ robot: robot.name, body: await this.body(req), at: Date.now() });
      return this.send(res, 204);
    }
    return this.error(res, 404, 'not-found', 'no such route');
  }
}

/** Enclave files with recognisable, self-checking contents (not real certificates). */
export function fakeEnclaveFiles(tag: string, opts: { crl?: boolean; size?: number } = {}): Record<string, string> {
  const pad = 'x'.repeat(opts.size ?? 64);
  const file = (name: string): string => `BEGIN ${tag} ${name}\n${pad}\nEND ${tag} ${name}\n`;
  const names = ['identity_ca.cert.pem', 'cert.pem', 'key.pem', 'permissions_ca.cert.pem', 'governance.p7s', 'permissions.p7s'];
  if (opts.crl) names.push('crl.pem');
  return Object.fromEntries(names.map((n) => [n, file(n)]));
}
