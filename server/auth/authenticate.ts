import crypto from 'node:crypto';
import type { RequestHandler } from 'express';
import { Passport } from 'passport';
import { ExtractJwt, Strategy as JwtStrategy } from 'passport-jwt';
import { Unauthorized } from '../errors.js';
import type { Principal } from './principal.js';
import { ROBOT_AUDIENCE, TOKEN_ALGORITHM, TOKEN_ISSUER, USER_AUDIENCE } from './tokens.js';

/**
 * Turns a verified token's claims into a live principal: the user or robot must still exist and the
 * token's `ver` must still match (a deleted robot, a revoked device key, a changed password or a
 * demotion ends access at the next request).
 */
export interface PrincipalResolver {
  user(name: string, ver: string): Principal | undefined;
  robot(name: string, ver: string): Principal | undefined;
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
        algorithms: [TOKEN_ALGORITHM],
        issuer: TOKEN_ISSUER,
        audience: [USER_AUDIENCE, ROBOT_AUDIENCE],
        jsonWebTokenOptions: { clockTolerance: 5 },
      },
      (claims: Claims, done: (err: unknown, user?: Principal | false) => void) => {
        if (typeof claims.sub !== 'string' || typeof claims.ver !== 'string') return done(null, false);
        // jsonwebtoken takes a token without `exp` as one that never expires: every token must carry one, and
        // a lifetime no longer than this server now gives (lowering the TTL setting also ends longer tokens).
        const maxLifetime = claims.aud === USER_AUDIENCE ? lifetimes.userSeconds : lifetimes.robotSeconds;
        if (typeof claims.exp !== 'number' || typeof claims.iat !== 'number' || claims.exp - claims.iat > maxLifetime) {
          return done(null, false);
        }
        const principal =
          claims.aud === USER_AUDIENCE
            ? resolver.user(claims.sub, claims.ver)
            : claims.aud === ROBOT_AUDIENCE
              ? resolver.robot(claims.sub, claims.ver)
              : undefined;
        done(null, principal ?? false);
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
