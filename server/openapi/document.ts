import type { Requirement } from '../acl/guard.js';
import { OPERATIONS, type OperationSpec } from './operations.js';
import type { RouteInfo } from './routes.js';
import { componentSchemas } from './schemas.js';
import { toJsonSchema, type JsonSchema } from './zod-schema.js';

export interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description?: string };
  paths: Record<string, Record<string, JsonSchema>>;
  components: { schemas: Record<string, JsonSchema>; securitySchemes: Record<string, JsonSchema> };
  tags: { name: string; description: string }[];
  /** Input the zod converter could not describe (the OpenAPI test requires none). */
  'x-undescribed'?: string[];
}

const TAGS: Record<string, string> = {
  meta: 'This description',
  auth: 'Signing in (users)',
  users: 'User accounts (admin)',
  grants: 'What members may do (admin)',
  keystores: 'Keystores: CAs and governance',
  enclaves: 'Enclaves: keys, certificates, signed permissions',
  robots: 'Robots and their enrollment',
  bindings: 'Which robot receives which enclave',
  robot: 'For robots (device key and robot token)',
  audit: 'The audit log (admin)',
};

const PARAMETERS: Record<string, string> = {
  ks: 'keystore name',
  name: 'user or robot name',
  id: 'grant or binding id',
  path: 'enclave path without its leading slash; may contain `/` (`fleet/amr_07/driver`)',
};

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const errorResponse = (description: string): JsonSchema => ({ description, content: { 'application/json': { schema: ref('Error') } } });

/** The answers a route's guard gives, whatever its handler does. */
function guardAnswers(req: Requirement): Record<number, string> {
  const wrongKind = req.kind === 'robot' ? 'a user token (this is for robots)' : 'a robot token (this is for users)';
  // A member's refusals on enclave routes (403, or the 404 that hides what they may not read) are told in docs/api.md.
  const member = req.kind === 'admin' ? `; a member (admin only: ${req.capability})` : '';
  return { 401: 'no token, or an invalid or expired one', 403: `${wrongKind}${member}` };
}

function security(req: Requirement | undefined): JsonSchema[] {
  if (!req) return [];
  return [req.kind === 'robot' ? { robotToken: [] } : { userToken: [] }];
}

function operation(key: string, spec: OperationSpec, route: RouteInfo | undefined, gaps: string[]): JsonSchema {
  const [, path] = key.split(' ') as [string, string];
  const parameters: JsonSchema[] = [...path.matchAll(/\{([A-Za-z]+)\}/g)].map(([, name]) => ({
    name,
    in: 'path',
    required: true,
    description: PARAMETERS[name!] ?? name,
    schema: { type: 'string' },
  }));
  if (spec.query) {
    const q = toJsonSchema(spec.query, gaps, `${key} query`) as { properties: Record<string, JsonSchema>; required?: string[] };
    for (const [name, schema] of Object.entries(q.properties)) {
      parameters.push({ name, in: 'query', required: q.required?.includes(name) === true && !('default' in schema), schema });
    }
  }
  const responses: Record<string, JsonSchema> = {};
  const { ok } = spec;
  responses[String(ok.status)] = {
    description: ok.description ?? (ok.status === 204 ? 'done' : 'success'),
    ...(ok.schema ? { content: { 'application/json': { schema: ref(ok.schema) } } } : {}),
    ...(ok.mediaType ? { content: { [ok.mediaType]: { schema: { type: 'string', contentMediaType: ok.mediaType } } } } : {}),
    ...(ok.headers ? { headers: Object.fromEntries(Object.entries(ok.headers).map(([name, description]) => [name, { description, required: false, schema: { type: 'string' } }])) } : {}),
  };
  // Every JSON body goes through one parser with one size limit, before any route or guard runs.
  const bodyAnswers: Record<number, string> = spec.body && 'json' in spec.body
    ? { 400: 'the body is not valid JSON', 413: 'the body is larger than the server accepts (1 MiB by default)' }
    : {};
  const others: Partial<Record<number, string>> = { ...bodyAnswers, ...(route?.requirement ? guardAnswers(route.requirement) : {}), ...spec.also };
  for (const [status, description] of Object.entries(others)) {
    responses[status] = status === '304' ? { description } : errorResponse(description!);
    if (status === '429' || status === '503') {
      responses[status].headers = { 'Retry-After': { description: 'seconds to wait before trying again', schema: { type: 'integer', minimum: 1 } } };
    }
  }
  const op: JsonSchema = {
    operationId: `${key.split(' ')[0]!.toLowerCase()}${path.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
    summary: spec.summary,
    tags: [spec.tag],
    security: security(route?.requirement),
    ...(parameters.length ? { parameters } : {}),
    responses,
  };
  if (spec.body && 'json' in spec.body) {
    op.requestBody = { required: !spec.body.optional, content: { 'application/json': { schema: toJsonSchema(spec.body.json, gaps, `${key} body`) } } };
  } else if (spec.body) {
    const { raw, description } = spec.body;
    op.requestBody = { required: true, description, content: Object.fromEntries(raw.map((t) => [t, { schema: { type: 'string', contentMediaType: t } }])) };
  }
  return op;
}

/**
 * The OpenAPI 3.1 description of the `/v1` API. Operations and their answers come from OPERATIONS; who may
 * call each one (security, 401/403) from the guard the app's route really declares, so the two cannot drift.
 */
export function buildDocument(routes: readonly RouteInfo[]): OpenApiDocument {
  const byKey = new Map(routes.map((r) => [`${r.method} ${r.path}`, r]));
  const gaps: string[] = [];
  const paths: OpenApiDocument['paths'] = {};
  for (const [key, spec] of Object.entries(OPERATIONS)) {
    const [method, path] = key.split(' ') as [string, string];
    (paths[path] ??= {})[method.toLowerCase()] = operation(key, spec, byKey.get(key), gaps);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'ros2-enclave-server',
      // The version of the API described (its paths start with /v1), not of the server package.
      version: 'v1',
      description: 'Hands out ROS 2 DDS-Security enclaves to robot fleets. The human guide is docs/api.md.',
    },
    tags: Object.entries(TAGS).map(([name, description]) => ({ name, description })),
    paths,
    components: {
      schemas: componentSchemas,
      securitySchemes: {
        userToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'from POST /v1/auth/login (audience enclave-server:user)' },
        robotToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'from POST /v1/auth/robot (audience enclave-server:robot)' },
      },
    },
    ...(gaps.length ? { 'x-undescribed': gaps } : {}),
  };
}
