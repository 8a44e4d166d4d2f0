import { Router, type Express } from 'express';
import { buildDocument } from './document.js';
import { routesOf } from './routes.js';

export const OPENAPI_PATH = '/v1/openapi.json';

/**
 * `GET /v1/openapi.json`, no auth: the API's shape is not a secret (docs/api.md says the same in the
 * repository) and clients and tools must be able to read it before they hold a token. What a caller may *do*
 * is still decided per route. Mounted after every other route, so the document is built once, here, from the
 * complete route table (the app is not served before createApp returns).
 */
export function openapiRoutes(app: Express): Router {
  const r = Router();
  let body = '';
  r.get(OPENAPI_PATH, (_req, res) => {
    res.type('application/json').send(body);
  });
  body = JSON.stringify(buildDocument([...routesOf(app), ...routesOf(r)]));
  return r;
}
