import type { Request } from 'express';
import { Unauthorized } from '../errors.js';

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
