import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import { callerOf, type Guards } from '../acl/guard.js';
import { h } from '../http/handler.js';
import { query } from '../http/validate.js';
import type { FleetService } from './fleet.service.js';

export const UI_PATH = '/ui/';

/**
 * The console's policy: its own script and stylesheet only (no inline script or style, no other origin: robot
 * LANs are often offline), API calls to this origin, never framed. Stricter than helmet's default for the API.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export const FleetQuery = z.object({
  silentMinutes: z.coerce.number().int().min(1).max(7 * 24 * 60).default(10),
});

/**
 * Where `npm run build` put the console: `dist/ui` next to `dist/server` when running the build, or the
 * repository's `dist/ui` when running from source (tsx).
 */
export function defaultUiDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // From source (server/console/*.ts) the repository's ui/ is the *source*: the build is in dist/ui.
  return import.meta.url.endsWith('.ts') ? path.resolve(here, '../../dist/ui') : path.resolve(here, '../../ui');
}

/** The console's static files at /ui/ (no auth: the files hold no data; every datum comes from /v1 with a token). */
export function consoleStaticRoutes(uiDir: string): Router {
  const r = Router();
  const csp: RequestHandler = (_req, res, next) => {
    res.setHeader('Content-Security-Policy', CONSOLE_CSP);
    next();
  };
  // Express matches `/ui` and `/ui/` alike (non-strict routing): the page's relative asset URLs need the slash.
  r.get('/ui', csp, (req, res) => {
    if (!req.path.endsWith('/')) return res.redirect(301, UI_PATH);
    const index = path.join(uiDir, 'index.html');
    if (!existsSync(index)) {
      res.status(503).type('text/plain').send('the console is not built: run `npm run build`\n');
      return;
    }
    // The page names the hashed assets of this build: always ask again, so a new build is picked up.
    res.setHeader('Cache-Control', 'no-cache');
    res.sendFile(index);
  });
  // Asset names carry their content hash: a new build is a new name, so they may be kept for a year.
  r.use(
    '/ui/assets',
    csp,
    express.static(path.join(uiDir, 'assets'), { index: false, immutable: true, maxAge: '365d', fallthrough: true, redirect: false }),
  );
  return r;
}

/** Read-only views the console needs that the resource routes do not give in one answer. */
export function consoleApiRoutes(fleet: FleetService, guards: Guards): Router {
  const r = Router();
  // Who the token belongs to and, for a member, what their own grants let them do: the console offers only
  // the pages and actions the caller may use, without probing (a member's probe of an admin route would be an
  // audited refusal at every sign-in). A member learns nothing here that is not theirs.
  r.get('/v1/session', guards.user, h((req, res) => {
    const caller = callerOf(req);
    const grants = caller.grants.map((g) => ({ keystore: g.keystore, pattern: g.pattern, capabilities: [...g.capabilities] }));
    res.json({ name: caller.name, role: caller.role, grants });
  }));
  r.get('/v1/fleet', guards.user, h(async (req, res) => {
    res.json(await fleet.summary(callerOf(req), query(req, FleetQuery).silentMinutes));
  }));
  return r;
}
