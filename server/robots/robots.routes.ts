import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { callerOf, robotOf, type Guards } from '../acl/guard.js';
import type { Piece } from '../http/gzip-pieces.js';
import { clientIp, h, sendJsonParts } from '../http/handler.js';
import { refuseThroughApp, type FrontLane, type LeanLane } from '../http/lean.js';
import { overloaded, type LoadMonitor } from '../http/overload.js';
import { body, labelsSchema } from '../http/validate.js';
import { Unauthorized } from '../errors.js';
import { REPORT_HEADER, REPORT_ON_NEXT_CONTACT } from '../bundles/wire.js';
import type { RobotTokenVerifier } from '../auth/authenticate.js';
import type { RobotPrincipal } from '../auth/principal.js';
import type { LoginExtra, RobotsService } from './robots.service.js';

export const CreateRobot = z.object({ name: z.string().max(63), labels: labelsSchema.default({}) }).strict();
export const PatchRobot = z.object({ labels: labelsSchema }).strict();
export const TokenBody = z
  .object({
    ttlSeconds: z.number().int().min(60).max(7 * 86400).default(3600),
    /** Lets the token replace the device key of a robot that is enrolled already. */
    reenroll: z.boolean().default(false),
  })
  .strict();
export const Enroll = z
  .object({
    token: z.string().min(10).max(200),
    publicKey: z.string().min(50).max(4096),
    agentVersion: z.string().max(64).optional(),
  })
  .strict();
export const RobotLogin = z
  .object({
    assertion: z.string().min(20).max(4096),
    /** The robot's bundle in the same answer: a booting agent needs both, and one request costs the fleet half. */
    bundle: z.boolean().default(false),
  })
  .strict();

/**
 * The bundle a login answers with (BundlesService.atLogin): prepared and audited with the login, then its
 * bytes. Prepared as undefined when the robot's enrollment changed meanwhile.
 */
export interface LoginBundle<T> extends LoginExtra<T | undefined> {
  answer(prepared: T): Piece[];
  /** Whether to ask the robot to report on its next contact (BundlesService.reportsLater). */
  reportsLater(): boolean;
}

/**
 * The login's answer: the token, and with `bundle: true` the bundle after it in one JSON object, spliced from
 * the cached bytes (not parsed and stringified again). No-store: a token, and maybe a private key. `ip`: the
 * client's address as the app's `trust proxy` setting reads it (throttles and the audit log use it).
 */
async function answerLogin<T>(robots: RobotsService, bundle: LoginBundle<T>, req: IncomingMessage & { body?: unknown }, res: ServerResponse, ip: string): Promise<void> {
  const b = body(req, RobotLogin);
  const { issued, extra } = await robots.login(b.assertion, ip, b.bundle ? bundle : undefined);
  res.setHeader('Cache-Control', 'no-store');
  const head = JSON.stringify(issued);
  // The token is a secret: a piece of its own, stored, never compressed with the rest (see gzip-pieces.ts).
  if (!b.bundle) return sendJsonParts(req, res, [{ raw: Buffer.from(head) }]);
  if (extra === undefined) throw new Unauthorized('assertion refused', 'invalid-assertion');
  if (bundle.reportsLater()) res.setHeader(REPORT_HEADER, REPORT_ON_NEXT_CONTACT);
  sendJsonParts(req, res, [{ raw: Buffer.from(`${head.slice(0, -1)},"bundle":`) }, ...bundle.answer(extra), { raw: CLOSE }]);
}
const CLOSE = Buffer.from('}');
// A robot's clock may be days off (no RTC); a year either way is far beyond any real skew.
const MAX_SKEW_MS = 366 * 86_400_000;
export const Report = z
  .object({
    revision: z.string().max(128).nullable().default(null),
    filesystem: z.string().max(32).nullable().default(null),
    clockSkewMs: z.number().int().min(-MAX_SKEW_MS).max(MAX_SKEW_MS).nullable().default(null),
    agentVersion: z.string().max(64).nullable().default(null),
    enclaves: z
      .array(z.object({ keystore: z.string().max(64), path: z.string().max(300), notAfter: z.string().max(40) }).passthrough())
      .max(10_000)
      .default([]),
  })
  .passthrough();

export function robotsRoutes<T>(robots: RobotsService, bundle: LoginBundle<T>): Router {
  const r = Router();
  // Robots' own endpoints: the one-time token or a signed assertion is the credential.
  r.post('/v1/enroll', h(async (req, res) => {
    const b = body(req, Enroll);
    res.status(201).json({ robot: await robots.enroll(b.token, b.publicKey, b.agentVersion, clientIp(req)) });
  }));
  r.post('/v1/auth/robot', h((req, res) => answerLogin(robots, bundle, req, res, clientIp(req))));
  return r;
}

export function robotsAuthedRoutes(robots: RobotsService, guards: Guards): Router {
  const r = Router();
  r.post(REPORT_PATH, guards.robot, h(async (req, res) => {
    await answerReport(robots, robotOf(req), req, res);
  }));

  const admin = guards.admin('robot:manage');
  r.get('/v1/robots', guards.user, h(async (req, res) => {
    res.json({ robots: await robots.list(callerOf(req)) });
  }));
  r.post('/v1/robots', admin, h(async (req, res) => {
    const b = body(req, CreateRobot);
    res.status(201).json(await robots.create(callerOf(req), b.name, b.labels));
  }));
  r.get('/v1/robots/:name', guards.user, h(async (req, res) => {
    res.json(await robots.get(callerOf(req), req.params.name!));
  }));
  r.patch('/v1/robots/:name', admin, h(async (req, res) => {
    res.json(await robots.setLabels(callerOf(req), req.params.name!, body(req, PatchRobot).labels));
  }));
  r.delete('/v1/robots/:name', admin, h(async (req, res) => {
    await robots.delete(callerOf(req), req.params.name!);
    res.status(204).end();
  }));
  r.post('/v1/robots/:name/enrollment-tokens', admin, h(async (req, res) => {
    const { ttlSeconds, reenroll } = body(req, TokenBody);
    res.status(201).json(await robots.createEnrollmentToken(callerOf(req), req.params.name!, ttlSeconds, reenroll));
  }));
  r.post('/v1/robots/:name/revoke-key', admin, h(async (req, res) => {
    res.json(await robots.revokeKey(callerOf(req), req.params.name!));
  }));
  return r;
}

const LOGIN_PATH = '/v1/auth/robot';
const REPORT_PATH = '/v1/robot/report';

async function answerReport(robots: RobotsService, robot: RobotPrincipal, req: express.Request, res: express.Response): Promise<void> {
  const b = body(req, Report);
  await robots.report(robot, {
    revision: b.revision,
    filesystem: b.filesystem,
    clockSkewMs: b.clockSkewMs,
    agentVersion: b.agentVersion,
    enclaves: b.enclaves.map((e) => ({ keystore: e.keystore, path: e.path, notAfter: e.notAfter })),
  });
  res.status(204).end();
}

/**
 * A robot's report past the general middleware stack: `enclave-agent` sends one after every bundle that
 * changed, so a rotation reaching ten thousand robots brings ten thousand reports right behind the deliveries.
 * The token is checked as for a bundle poll (`RobotTokenVerifier`); a request without a good one goes down the
 * general stack, which refuses and audits it. Same shedding, body limit and validation as the route.
 */
export function robotReportFastPath(robots: RobotsService, tokens: RobotTokenVerifier, lane: LeanLane, load: LoadMonitor, jsonLimit: string): RequestHandler {
  const json = jsonReader(jsonLimit);
  return (req, res, next) => {
    const auth = req.headers.authorization;
    if (req.method !== 'POST' || req.url !== REPORT_PATH || !auth?.startsWith('Bearer ')) return next();
    tokens
      .verify(auth.slice(7))
      .then((robot) => {
        if (!robot) return next();
        lane.begin(req, res, REPORT_PATH);
        shedOrAnswer(load, json, req, res, next, () => answerReport(robots, robot, req, res));
      })
      .catch(next);
  };
}

/**
 * A robot's login, answered before express (see `withFrontLane` and `bundleFastPath`): in a boot storm every
 * robot logs in once, and express's own dispatch and the general stack cost more than the login (in a profile
 * of a boot storm, V8's slow paths for the objects express re-prototypes were the largest share). Same
 * shedding, body limit, validation, answer and client address as the route; every refusal is rendered and
 * audited by the app (`refuseThroughApp`), since the body has been read by then.
 */
export function robotLoginFrontLane<T>(
  robots: RobotsService,
  bundle: LoginBundle<T>,
  lane: LeanLane,
  load: LoadMonitor,
  jsonLimit: string,
  clientAddress: (req: IncomingMessage) => string,
): FrontLane {
  const json = jsonReader(jsonLimit);
  return (req, res, general) => {
    if (req.method !== 'POST' || req.url !== LOGIN_PATH) return general();
    lane.begin(req, res, LOGIN_PATH);
    const refuse = (err: unknown): void => refuseThroughApp(req, err, general);
    shedOrAnswer(load, json, req, res, refuse, () => answerLogin(robots, bundle, req, res, clientAddress(req)));
  };
}

type BodyReader = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void;

/** express.json for the fast paths: body-parser reads a plain IncomingMessage (headers and stream) as express's. */
function jsonReader(limit: string): BodyReader {
  return express.json({ limit, strict: true, inflate: false }) as unknown as BodyReader;
}

/**
 * A robot POST on a fast path: 503 while saturated (before reading the body), else the body read, then `answer`;
 * `refuse` gets every refusal, unwritten. Should a write itself fail, the connection goes.
 */
function shedOrAnswer(load: LoadMonitor, json: BodyReader, req: IncomingMessage, res: ServerResponse, refuse: (err: unknown) => void, answer: () => Promise<void>): void {
  const busy = overloaded(load);
  if (busy) return refuse(busy);
  json(req, res, (err) => {
    if (err) return refuse(err);
    answer().catch((e: unknown) => (res.headersSent ? res.destroy() : refuse(e)));
  });
}
