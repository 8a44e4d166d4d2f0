import crypto from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Principal } from './principal.js';

export const TOKEN_ISSUER = 'enclave-server';
export const USER_AUDIENCE = 'enclave-server:user';
export const ROBOT_AUDIENCE = 'enclave-server:robot';
/** Pinned: a token with any other `alg` (none, RS256 with the secret as a public key...) is refused. */
export const TOKEN_ALGORITHM = 'HS256' as const;

export interface TokenClaims {
  sub: string;
  aud: string;
  /** users: the token epoch (bumped on password change/demotion); robots: the device key id. */
  ver: string;
}

/**
 * What a token's `ver` claim binds it to. A user's creation time is in it, so a user deleted and created
 * again under the same name does not get the old tokens back; a robot's enrollment time is in it, so a
 * re-enrollment (even with the same device key) ends the tokens issued before.
 */
export const userTokenVersion = (u: { createdAt: string; tokenEpoch: number }) => `${u.createdAt}/${u.tokenEpoch}`;
export const robotTokenVersion = (r: { keyId: string | null; enrolledAt: string | null }) => `${r.keyId}/${r.enrolledAt}`;

export interface IssuedToken {
  token: string;
  expiresAt: string;
}

/** Signs our own bearer tokens with the server's secret (generated once, kept in the data folder). */
export class TokenIssuer {
  private readonly key: crypto.KeyObject;
  constructor(
    secret: Buffer,
    private readonly userTtlSeconds: number,
    private readonly robotTtlSeconds: number,
    private readonly now: () => number = Date.now,
  ) {
    this.key = crypto.createSecretKey(secret);
  }

  issue(principal: Principal, ver: string): IssuedToken {
    const ttl = principal.kind === 'user' ? this.userTtlSeconds : this.robotTtlSeconds;
    const iat = Math.floor(this.now() / 1000);
    const token = jwt.sign(
      { ver, iat, exp: iat + ttl },
      this.key,
      {
        algorithm: TOKEN_ALGORITHM,
        issuer: TOKEN_ISSUER,
        audience: principal.kind === 'user' ? USER_AUDIENCE : ROBOT_AUDIENCE,
        subject: principal.name,
      },
    );
    return { token, expiresAt: new Date((iat + ttl) * 1000).toISOString() };
  }
}
