import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { makeTestApp } from './helpers/app.js';

interface Layer {
  route?: { path: string | RegExp; methods: Record<string, boolean> };
  name: string;
  handle: { stack?: Layer[] };
}

/** Every route the app really serves, as "METHOD /path" with docs/api.md's placeholders. */
function routesOf(stack: Layer[]): string[] {
  const out: string[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const raw = layer.route.path;
      const path = (raw instanceof RegExp ? raw.source.replace(/\\\//g, '/').replace(/^\^|\$$/g, '') : raw)
        .replace('([^/]+)', '{ks}')
        .replace(/:ks/g, '{ks}')
        .replace(/:name/g, '{name}')
        .replace(/:id/g, '{id}')
        .replace(/\/\*/g, '/{path}');
      for (const m of Object.keys(layer.route.methods)) out.push(`${m.toUpperCase()} ${path}`);
    } else if (layer.name === 'router' && layer.handle.stack) {
      out.push(...routesOf(layer.handle.stack));
    }
  }
  return out;
}

test('every route the server serves is documented in docs/api.md', async () => {
  const ctx = await makeTestApp();
  try {
    const doc = fs.readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');
    const routes = routesOf((ctx.app as unknown as { _router: { stack: Layer[] } })._router.stack);
    assert.ok(routes.length > 30, `found ${routes.length} routes`);
    const missing = routes.filter((r) => {
      const [method, path] = r.split(' ') as [string, string];
      // Documented as "`METHOD /path`" or "`METHOD /path?query`"; enclave routes abbreviate nothing.
      return !doc.includes(`\`${method} ${path}\``) && !doc.includes(`\`${method} ${path}?`) && !doc.includes(`\`${method} ${path} `);
    });
    assert.deepEqual(missing, []);
  } finally {
    ctx.services.bundles.close();
    ctx.close();
  }
});
