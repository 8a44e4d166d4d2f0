import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { makeTestApp } from './helpers/app.js';
import { routesOf } from '../server/openapi/routes.js';

test('every route the server serves is documented in docs/api.md', async () => {
  const ctx = await makeTestApp();
  try {
    const doc = fs.readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');
    const routes = routesOf(ctx.app).map((r) => `${r.method} ${r.path}`);
    assert.ok(routes.length > 30, `found ${routes.length} routes`);
    const missing = routes.filter((r) => {
      const [method, path] = r.split(' ') as [string, string];
      // Documented as "`METHOD /path`" or "`METHOD /path?query`"; enclave routes abbreviate nothing.
      return !doc.includes(`\`${method} ${path}\``) && !doc.includes(`\`${method} ${path}?`) && !doc.includes(`\`${method} ${path} `);
    });
    assert.deepEqual(missing, []);
  } finally {
    await ctx.services.bundles.close();
    await ctx.close();
  }
});
