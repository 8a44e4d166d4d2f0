import { Router } from 'express';
import { z } from 'zod';
import { callerOf, robotOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { body } from '../http/validate.js';
import type { IdentitiesService } from './identities.service.js';

/** A P-256 CSR in PEM is about 500 bytes; 16 KiB leaves room for any subject and attributes a tool adds. */
export const MAX_CSR_CHARS = 16 * 1024;
export const IdentityRequest = z
  .object({
    keystore: z.string().min(1).max(64),
    enclave: z.string().min(1).max(300),
    csr: z.string().min(1).max(MAX_CSR_CHARS),
  })
  .strict();

export function identitiesRoutes(identities: IdentitiesService, guards: Guards): Router {
  const r = Router();
  r.post('/v1/robot/identity', guards.robot, h(async (req, res) => {
    const b = body(req, IdentityRequest);
    res.status(201).json(await identities.issue(robotOf(req), b));
  }));
  r.get('/v1/robots/:name/identities', guards.user, h(async (req, res) => {
    res.json({ identities: await identities.list(callerOf(req), req.params.name!) });
  }));
  r.delete('/v1/robots/:name/identities/:ks/:serial', guards.user, h(async (req, res) => {
    await identities.revoke(callerOf(req), req.params.name!, req.params.ks!, req.params.serial!);
    res.status(204).end();
  }));
  return r;
}
