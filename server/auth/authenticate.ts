import crypto from 'node:crypto';
import type { RequestHandler } from 'express';
import { Passport } from 'passport';
import { ExtractJwt, Strategy as JwtStrategy } from 'passport-jwt';
import { Unauthorized } from '../errors.js';
import jwt from 'jsonwebtoken';
import type { Principal, RobotPrincipal } from './principal.js';
import { ROBOT_AUDIENCE, TOKEN_ALGORITHM, TOKEN_ISSUER, USER_AUDIENCE } from './tokens.js';

/**
 * Turns a verified token's claims into a live principal: the user or robot must still exist and the
 * token's `ver` must still match (a deleted robot, a revoked device key, a changed password or a
 * demotion ends access at the next request).
 */
export interface PrincipalResolver {
  user(name: string, ver: string): Promise<Principal | undefined>;
  robot(name: string, ver: string): Promise<Principal | undefined>;
}

interface Claims {
  sub?: unknown;
  aud?: unknown;
  ver?: unknown;
  iat?: unknown;
  exp?: unknown;
}

/** The longest lifetime each kind of token may claim: what this server issues, never more. */
export interface TokenLifetimes {
  userSeconds: number;
  robotSeconds: number;
}

const VERIFY_OPTIONS = { algorithms: [TOKEN_ALGORITHM], issuer: TOKEN_ISSUER, clockTolerance: 5 };

/**
 * The rule every verified token's claims must pass to name a live principal. jsonwebtoken takes a token
 * without `exp` as one that never expires: every token must carry one, and a lifetime no longer than this
 * server now gives (lowering the TTL setting also ends longer tokens).
 */
async function principalFromClaims(claims: Claims, resolver: PrincipalResolver, lifetimes: TokenLifetimes): Promise<Principal | undefined> {
  if (typeof claims.sub !== 'string' || typeof claims.ver !== 'string') return undefined;
  const maxLifetime = claims.aud === USER_AUDIENCE ? lifetimes.userSeconds : lifetimes.robotSeconds;
  if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number' || claims.exp - claims.iat > maxLifetime) return undefined;
  return claims.aud === USER_AUDIENCE
    ? resolver.user(claims.sub, claims.ver)
    : claims.aud === ROBOT_AUDIENCE
      ? resolver.robot(claims.sub, claims.ver)
      : undefined;
}

const MAX_CACHED_ROBOT_TOKENS = 50_000;

/**
 * Robot bearer tokens for the bundle fast path: the same checks as `authenticate`, with each token's
 * signature and claims verified once and remembered until it expires (a robot polls with one token for its
 * whole lifetime). Whether the robot still exists with that key is asked on every request, so deleting a robot
 * or revoking its key still ends access at once.
 */
export class RobotTokenVerifier {
  private readonly key: crypto.KeyObject;
  private readonly verified = new Map<string, { claims: Claims; expiresMs: number }>();

  constructor(
    secret: Buffer,
    private readonly resolver: PrincipalResolver,
    private readonly lifetimes: TokenLifetimes,
  ) {
    this.key = crypto.createSecretKey(secret);
  }

  async verify(token: string): Promise<RobotPrincipal | undefined> {
    const now = Date.now();
    let known = this.verified.get(token);
    if (known && known.expiresMs <= now) {
      this.verified.delete(token);
      known = undefined;
    }
    if (!known) {
      let claims: Claims;
      try {
        claims = jwt.verify(token, this.key, { ...VERIFY_OPTIONS, audience: ROBOT_AUDIENCE }) as Claims;
      } catch {
        return undefined;
      }
      if (typeof claims.exp !== 'number') return undefined;
      if (this.verified.size >= MAX_CACHED_ROBOT_TOKENS) this.verified.clear();
      known = { claims, expiresMs: (claims.exp + VERIFY_OPTIONS.clockTolerance) * 1000 };
      this.verified.set(token, known);
    }
    const p = await principalFromClaims(known.claims, this.resolver, this.lifetimes);
    return p?.kind === 'robot' ? p : undefined;
  }
}

/**
 * Bearer-token authentication (passport-jwt): HS256 only, issuer, audience and expiry checked. Requests
 * without a token pass through anonymous; the route decides whether that is a 401.
 */
export function authenticate(secret: Buffer, resolver: PrincipalResolver, lifetimes: TokenLifetimes): RequestHandler {
  // A KeyObject, made once: given raw bytes, jsonwebtoken first tries (and fails) to parse them as a public
  // key on every request, which was most of the CPU of an authenticated request.
  const key = crypto.createSecretKey(secret);
  const passport = new Passport();
  passport.use(
    'bearer-jwt',
    new JwtStrategy(
      {
        jwtFromRequest: ExtractJwt.fromAuthHeaderAsBearerToken(),
        secretOrKey: key as unknown as Buffer,
        algorithms: VERIFY_OPTIONS.algorithms,
        issuer: VERIFY_OPTIONS.issuer,
        audience: [USER_AUDIENCE, ROBOT_AUDIENCE],
        jsonWebTokenOptions: { clockTolerance: VERIFY_OPTIONS.clockTolerance },
      },
      (claims: Claims, done: (err: unknown, user?: Principal | false) => void) => {
        // A store that cannot answer is an error (503), not a bad token.
        principalFromClaims(claims, resolver, lifetimes).then((p) => done(null, p ?? false), done);
      },
    ),
  );
  const handler = passport.initialize();
  return (req, res, next) => {
    if (!req.headers.authorization) return next();
    handler(req, res, () =>
      passport.authenticate('bearer-jwt', { session: false }, (err: unknown, principal: Principal | false) => {
        if (err) return next(err);
        // One message for every kind of bad token: no oracle telling expired from forged.
        if (!principal) return next(new Unauthorized('invalid or expired token', 'invalid-token'));
        req.principal = principal;
        next();
      })(req, res, next),
    );
  };
}
