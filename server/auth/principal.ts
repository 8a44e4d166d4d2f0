import type { Request } from 'express';
import { Forbidden, Unauthorized } from '../errors.js';

export type Role = 'admin' | 'member';

/** Who is calling, established by the authentication middleware from a verified token. */
export type Principal =
  | { kind: 'user'; name: string; role: Role }
  | { kind: 'robot'; name: string; keyId: string };

export type UserPrincipal = Extract<Principal, { kind: 'user' }>;
export type RobotPrincipal = Extract<Principal, { kind: 'robot' }>;

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

export function principalOf(req: Request): Principal {
  if (!req.principal) throw new Unauthorized();
  return req.principal;
}

/** A person's endpoint: a robot token gets 403 (authenticated, not allowed), no token 401. */
export function userOf(req: Request): UserPrincipal {
  const p = principalOf(req);
  if (p.kind !== 'user') throw new Forbidden('this endpoint is for users, not robots');
  return p;
}

export function adminOf(req: Request): UserPrincipal {
  const p = userOf(req);
  if (p.role !== 'admin') throw new Forbidden('administrators only');
  return p;
}

export function robotOf(req: Request): RobotPrincipal {
  const p = principalOf(req);
  if (p.kind !== 'robot') throw new Forbidden('this endpoint is for robots');
  return p;
}
