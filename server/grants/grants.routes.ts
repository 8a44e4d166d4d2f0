import { Router } from 'express';
import { z } from 'zod';
import { callerOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { body, labelsSchema, query } from '../http/validate.js';
import type { GrantsService } from './grants.service.js';

const envelopeSchema = z
  .object({
    publish: z.array(z.string().max(256)).max(256).default([]),
    subscribe: z.array(z.string().max(256)).max(256).default([]),
  })
  .strict();

export const CreateGrant = z
  .object({
    user: z.string().min(1).max(64),
    keystore: z.string().min(1).max(64),
    pattern: z.string().min(1).max(300),
    capabilities: z.array(z.string().max(16)).min(1).max(3),
    robotSelector: labelsSchema.optional(),
    permissionsEnvelope: envelopeSchema.optional(),
  })
  .strict();
export const PatchGrant = z
  .object({
    capabilities: z.array(z.string().max(16)).min(1).max(3).optional(),
    robotSelector: labelsSchema.optional(),
    permissionsEnvelope: envelopeSchema.nullable().optional(),
  })
  .strict()
  .refine((p) => Object.keys(p).length > 0, 'nothing to change');
export const ListQuery = z.object({ user: z.string().max(64).optional(), keystore: z.string().max(64).optional() });

export function grantsRoutes(grants: GrantsService, guards: Guards): Router {
  const r = Router();
  const admin = guards.admin('grant:manage');
  r.get('/v1/grants', admin, h(async (req, res) => {
    res.json({ grants: await grants.list(query(req, ListQuery)) });
  }));
  r.post('/v1/grants', admin, h(async (req, res) => {
    res.status(201).json(await grants.create(callerOf(req), body(req, CreateGrant)));
  }));
  r.patch('/v1/grants/:id', admin, h(async (req, res) => {
    res.json(await grants.update(callerOf(req), req.params.id!, body(req, PatchGrant)));
  }));
  r.delete('/v1/grants/:id', admin, h(async (req, res) => {
    await grants.delete(callerOf(req), req.params.id!);
    res.status(204).end();
  }));
  return r;
}
