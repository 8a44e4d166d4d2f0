import type { Express, Router } from 'express';
import type { Requirement } from '../acl/guard.js';

/** One route the app serves: method, path as an OpenAPI template (`{ks}`, `{name}`, `{id}`, `{path}`), its guard. */
export interface RouteInfo {
  method: string;
  path: string;
  /** What the route's guard demands; absent for routes without a guard (no auth). */
  requirement?: Requirement;
}

interface Layer {
  route?: { path: string | RegExp; methods: Record<string, boolean>; stack: { handle: { requirement?: Requirement } }[] };
  name: string;
  handle: { stack?: Layer[] };
}

/**
 * Express path → template. `/*` is an enclave path (it may hold slashes); the only regex route is
 * `enclaves:batch`, whose capture group is the keystore.
 */
export function templateOf(raw: string | RegExp): string {
  if (raw instanceof RegExp) return raw.source.replace(/\\\//g, '/').replace(/^\^|\$$/g, '').replace('([^/]+)', '{ks}');
  return raw.replace(/:([A-Za-z]+)/g, '{$1}').replace(/\/\*/g, '/{path}');
}

function walk(stack: Layer[], out: RouteInfo[]): void {
  for (const layer of stack) {
    if (layer.route) {
      const requirement = layer.route.stack.find((l) => l.handle.requirement)?.handle.requirement;
      for (const m of Object.keys(layer.route.methods)) {
        out.push({ method: m.toUpperCase(), path: templateOf(layer.route.path), ...(requirement ? { requirement } : {}) });
      }
    } else if (layer.name === 'router' && layer.handle.stack) {
      walk(layer.handle.stack, out);
    }
  }
}

/** Every route registered so far on an app or a router (Express keeps them in its router stack), in order. */
export function routesOf(appOrRouter: Express | Router): RouteInfo[] {
  const holder = appOrRouter as unknown as { _router?: { stack: Layer[] }; stack?: Layer[] };
  const out: RouteInfo[] = [];
  walk(holder._router?.stack ?? holder.stack ?? [], out);
  return out;
}
