import { Router } from 'express';
import { z } from 'zod';
import { userOf } from '../auth/principal.js';
import { h } from '../http/handler.js';
import { body, labelsSchema } from '../http/validate.js';
import type { BindingsService } from './bindings.service.js';

const CreateBinding = z
  .object({
    keystore: z.string().min(1).max(64),
    enclave: z
      .string()
      .min(2)
      .max(300)
      .transform((p) => (p.startsWith('/') ? p : `/${p}`)),
    robot: z.string().min(1).max(63).optional(),
    selector: labelsSchema.optional(),
  })
  .strict();

export function bindingsRoutes(bindings: BindingsService): Router {
  const r = Router();
  r.get('/v1/bindings', h((req, res) => {
    res.json({ bindings: bindings.list(userOf(req)) });
  }));
  r.post('/v1/bindings', h((req, res) => {
    res.status(201).json(bindings.create(userOf(req), body(req, CreateBinding)));
  }));
  r.delete('/v1/bindings/:id', h((req, res) => {
    bindings.delete(userOf(req), req.params.id!);
    res.status(204).end();
  }));
  return r;
}
