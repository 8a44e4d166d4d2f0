import { Router } from 'express';
import { z } from 'zod';
import { MIN_PASSWORD_LENGTH } from '../auth/passwords.js';
import { callerOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { body } from '../http/validate.js';
import type { UsersService } from './users.service.js';

export const userNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9._-]{0,63}$/, 'must be lowercase letters, digits, ".", "_" or "-", starting with a letter');
const passwordSchema = z
  .string()
  .min(MIN_PASSWORD_LENGTH, `must be at least ${MIN_PASSWORD_LENGTH} characters`)
  .max(1024);
const roleSchema = z.enum(['admin', 'member']);

export const CreateUser = z.object({ name: userNameSchema, password: passwordSchema, role: roleSchema.default('member') }).strict();
export const PatchUser = z
  .object({ password: passwordSchema.optional(), role: roleSchema.optional() })
  .strict()
  .refine((p) => p.password !== undefined || p.role !== undefined, 'nothing to change');

export function usersRoutes(users: UsersService, guards: Guards): Router {
  const r = Router();
  const admin = guards.admin('user:manage');
  r.get('/v1/users', admin, h(async (_req, res) => {
    res.json({ users: await users.list() });
  }));
  r.post('/v1/users', admin, h(async (req, res) => {
    res.status(201).json(await users.create(callerOf(req).principal, body(req, CreateUser)));
  }));
  r.get('/v1/users/:name', admin, h(async (req, res) => {
    res.json(await users.get(req.params.name!));
  }));
  r.patch('/v1/users/:name', admin, h(async (req, res) => {
    res.json(await users.update(callerOf(req).principal, req.params.name!, body(req, PatchUser)));
  }));
  r.delete('/v1/users/:name', admin, h(async (req, res) => {
    await users.delete(callerOf(req).principal, req.params.name!);
    res.status(204).end();
  }));
  return r;
}
