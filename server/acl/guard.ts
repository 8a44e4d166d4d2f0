import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { principalOf, type RobotPrincipal } from '../auth/principal.js';
import { Denied, Unauthorized } from '../errors.js';
import type { AdminCapability, Capability, Grant } from './acl.js';
import { Caller } from './caller.js';

declare module 'express-serve-static-core' {
  interface Request {
    caller?: Caller;
  }
}

/** Where an enclave route's target is: the URL, or the (not yet validated) body. */
export type TargetOf = (req: Request) => { keystore: string; enclaves: string[] } | undefined;

/** What a route declares it needs, kept on the guard so the route table can be listed (docs, tests). */
export type Requirement =
  | { kind: 'user' }
  | { kind: 'robot' }
  | { kind: 'admin'; capability: AdminCapability }
  | { kind: 'enclave'; capability: Capability };

export type Guard = RequestHandler & { requirement: Requirement };

/** Express 4 does not catch rejected promises: a refusal (or a store that cannot answer) goes to `next`. */
const guard = (requirement: Requirement, fn: (req: Request, res: Response) => Promise<void> | void): Guard =>
  Object.assign<RequestHandler, { requirement: Requirement }>(
    (req, res, next: NextFunction) => {
      Promise.resolve()
        .then(() => fn(req, res))
        .then(() => next(), next);
    },
    { requirement },
  );

/**
 * Every authenticated route declares one of these. The caller's ACL is compiled once per request (one grants
 * query for a member, none for an admin) and kept on the request for the service to ask finer questions
 * (which robots, which permissions) through the same decision.
 */
export class Guards {
  constructor(private readonly grantsOf: (user: string) => Promise<readonly Grant[]>) {}

  private async caller(req: Request): Promise<Caller> {
    if (req.caller) return req.caller;
    const p = principalOf(req);
    if (p.kind !== 'user') {
      throw new Denied(403, 'this endpoint is for users, not robots', { capability: 'user', reason: 'robot-token' });
    }
    const grants = p.role === 'admin' ? [] : await this.grantsOf(p.name);
    req.caller ??= new Caller(p, grants);
    return req.caller;
  }

  /** Any signed-in person; what they get is filtered by their ACL. */
  readonly user: Guard = guard({ kind: 'user' }, async (req) => {
    await this.caller(req);
  });

  /** Only robot tokens. */
  readonly robot: Guard = guard({ kind: 'robot' }, (req) => {
    const p = principalOf(req);
    if (p.kind !== 'robot') throw new Denied(403, 'this endpoint is for robots', { capability: 'robot', reason: 'user-token' });
  });

  admin(capability: AdminCapability): Guard {
    return guard({ kind: 'admin', capability }, async (req) => {
      (await this.caller(req)).requireAdmin(capability);
    });
  }

  /**
   * An enclave capability. When the target is known from the request it is decided here, before the body is
   * worked on (a caller who may not manage these enclaves never gets the server to parse a policy archive);
   * the service asks again with what only it knows (robots' labels, the permissions it would sign).
   */
  enclave(capability: Capability, target?: TargetOf): Guard {
    return guard({ kind: 'enclave', capability }, async (req) => {
      const caller = await this.caller(req);
      const t = target?.(req);
      if (t && !caller.isAdmin) {
        caller.requireKeystoreVisible(t.keystore);
        for (const enclave of t.enclaves) caller.require({ capability, keystore: t.keystore, enclave });
      }
    });
  }
}

/** The compiled ACL of the request's user (the route's guard made it). */
export function callerOf(req: Request): Caller {
  if (!req.caller) throw new Unauthorized();
  return req.caller;
}

export function robotOf(req: Request): RobotPrincipal {
  const p = principalOf(req);
  if (p.kind !== 'robot') throw new Denied(403, 'this endpoint is for robots', { capability: 'robot', reason: 'user-token' });
  return p;
}
