import { Router } from 'express';
import { z } from 'zod';
import { adminOf } from '../auth/principal.js';
import { h } from '../http/handler.js';
import { query } from '../http/validate.js';
import type { AuditService } from './audit.service.js';

const AuditQuery = z.object({
  since: z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time')
    .transform((s) => new Date(s).toISOString())
    .optional(),
  actor: z.string().max(256).optional(),
  action: z.string().max(128).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
});

export function auditRoutes(audit: AuditService): Router {
  const r = Router();
  r.get('/v1/audit', h((req, res) => {
    adminOf(req);
    res.json({ entries: audit.list(query(req, AuditQuery)) });
  }));
  r.get('/v1/audit/verify', h(async (req, res) => {
    adminOf(req);
    res.json(await audit.verify());
  }));
  return r;
}
