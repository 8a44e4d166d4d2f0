import { Router } from 'express';
import { z } from 'zod';
import { userOf } from '../auth/principal.js';
import { h } from '../http/handler.js';
import { body, labelsSchema, query } from '../http/validate.js';
import type { GrantsService } from './grants.service.js';

const CreateGrant = z
  .object({
    user: z.string().min(1).max(64),
    keystore: z.string().min(1).max(64),
    pattern: z.string().min(1).max(300),
    capabilities: z.array(z.string()).min(1).max(3),
    robotSelector: labelsSchema.optional(),
  })
  .strict();
const ListQuery = z.object({ user: z.string().optional(), keystore: z.string().optional() });

export function grantsRoutes(grants: GrantsService): Router {
  const r = Router();
  r.get('/v1/grants', h((req, res) => {
    res.json({ grants: grants.list(userOf(req), query(req, ListQuery)) });
  }));
  r.post('/v1/grants', h((req, res) => {
    res.status(201).json(grants.create(userOf(req), body(req, CreateGrant)));
  }));
  r.delete('/v1/grants/:id', h((req, res) => {
    grants.delete(userOf(req), req.params.id!);
    res.status(204).end();
  }));
  return r;
}
