import { Router } from 'express';
import { z } from 'zod';
import type { Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { query } from '../http/validate.js';
import type { AuditService } from './audit.service.js';

const isoTime = z
  .string()
  .max(64)
  .refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time')
  .transform((s) => new Date(s).toISOString())
  .optional();

export const AuditQuery = z.object({
  since: isoTime,
  until: isoTime,
  actor: z.string().max(256).optional(),
  /** Entries whose target contains this text (any case). */
  target: z.string().min(1).max(256).optional(),
  action: z.string().max(128).optional(),
  result: z.enum(['success', 'failure', 'denied']).optional(),
  limit: z.coerce.number().int().min(1).max(10_000).default(100),
});

export function auditRoutes(audit: AuditService, guards: Guards): Router {
  const r = Router();
  const admin = guards.admin('audit:read');
  r.get('/v1/audit', admin, h(async (req, res) => {
    res.json({ entries: await audit.list(query(req, AuditQuery)) });
  }));
  r.get('/v1/audit/verify', admin, h(async (_req, res) => {
    res.json(await audit.verify());
  }));
  return r;
}
