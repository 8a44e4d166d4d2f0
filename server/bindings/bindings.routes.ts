import { Router } from 'express';
import { z } from 'zod';
import { callerOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { body, labelsSchema } from '../http/validate.js';
import type { BindingsService } from './bindings.service.js';

const enclavePathSchema = z
  .string()
  .min(2)
  .max(300)
  .transform((p) => (p.startsWith('/') ? p : `/${p}`));

export const CreateBinding = z
  .object({
    keystore: z.string().min(1).max(64),
    enclave: enclavePathSchema,
    robot: z.string().min(1).max(63).optional(),
    selector: labelsSchema.optional(),
  })
  .strict();

export function bindingsRoutes(bindings: BindingsService, guards: Guards): Router {
  const r = Router();
  r.get('/v1/bindings', guards.user, h(async (req, res) => {
    res.json({ bindings: await bindings.list(callerOf(req)) });
  }));
  // The service decides `bind` once it knows the robots; the rights check comes before "no such robot".
  r.post('/v1/bindings', guards.enclave('bind'), h(async (req, res) => {
    res.status(201).json(await bindings.create(callerOf(req), body(req, CreateBinding)));
  }));
  r.delete('/v1/bindings/:id', guards.enclave('bind'), h(async (req, res) => {
    await bindings.delete(callerOf(req), req.params.id!);
    res.status(204).end();
  }));
  return r;
}
