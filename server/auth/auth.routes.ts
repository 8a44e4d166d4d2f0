import { Router } from 'express';
import { z } from 'zod';
import { clientIp, h } from '../http/handler.js';
import { body } from '../http/validate.js';
import type { AuthService } from './auth.service.js';

export const LoginBody = z.object({
  username: z.string().min(1).max(64),
  password: z.string().min(1).max(1024),
});

export function authRoutes(auth: AuthService): Router {
  const r = Router();
  r.post(
    '/v1/auth/login',
    h(async (req, res) => {
      const { username, password } = body(req, LoginBody);
      res.json(await auth.login(username, password, clientIp(req)));
    }),
  );
  return r;
}
