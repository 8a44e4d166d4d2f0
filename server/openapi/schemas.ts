import { FLEET_STATES } from '../console/fleet.service.js';
import type { JsonSchema } from './zod-schema.js';

/**
 * Response bodies, as components. The services return TypeScript types (no zod on the way out), so these are
 * written by hand next to each other; test/openapi.test.ts validates real answers against them, and objects
 * are closed (`additionalProperties: false`) so a field added to an answer must be added here too.
 */
const time: JsonSchema = { type: 'string', format: 'date-time' };
const nullable = (s: JsonSchema): JsonSchema => ({ anyOf: [s, { type: 'null' }] });
const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const closed = (properties: Record<string, JsonSchema>, optional: string[] = []): JsonSchema => ({
  type: 'object',
  properties,
  required: Object.keys(properties).filter((k) => !optional.includes(k)),
  additionalProperties: false,
});
const listOf = (key: string, item: string): JsonSchema => closed({ [key]: { type: 'array', items: ref(item) } });
const labels: JsonSchema = { type: 'object', additionalProperties: { type: 'string' } };
const str: JsonSchema = { type: 'string' };

const enclaveSummary = {
  keystore: str,
  path: str,
  status: { type: 'string', enum: ['active', 'revoked'] },
  serial: str,
  notBefore: time,
  notAfter: time,
  permissionsSource: { type: 'string', enum: ['default', 'policy', 'imported', 'envelope'] },
  identityMode: { type: 'string', enum: ['shared', 'per-robot'], description: "per-robot: no shared key or certificate (serial ''); each bound robot requests its own" },
  createdAt: time,
  updatedAt: time,
};
const enclaveDetail = { certificate: str, subject: str, fingerprintSha256: str, permissionsXml: str, policyXml: nullable(str) };
const keystore = {
  name: str,
  domainId: { type: 'integer' },
  sharedCa: { type: 'boolean' },
  importOnly: { type: 'boolean' },
  origin: { type: 'string', enum: ['generated', 'imported'] },
  identityCa: ref('CaCertificate'),
  permissionsCa: ref('CaCertificate'),
  enclaveValidityDays: { type: 'integer' },
  backdateSeconds: { type: 'integer' },
  identityMode: { type: 'string', enum: ['shared', 'per-robot'], description: "what new enclaves get unless they say: one shared key (sros2's way) or each robot's own" },
  revocations: { type: 'integer' },
  createdAt: time,
  updatedAt: time,
};
const robot = {
  name: str,
  labels,
  enrolled: { type: 'boolean' },
  enrolledAt: nullable(time),
  keyFingerprint: nullable(str),
  agentVersion: nullable(str),
  createdAt: time,
  updatedAt: time,
};
const binding = { id: str, keystore: str, enclave: str, robot: str, selector: labels, grant: nullable(str), createdBy: str, createdAt: time };
const identity = closed(
  {
    keystore: str,
    enclave: str,
    serial: { type: 'string', pattern: '^[0-9a-f]+$' },
    notBefore: time,
    notAfter: time,
    status: { type: 'string', enum: ['live', 'superseded', 'revoked', 'expired'] },
    issuedAt: time,
    revokedAt: time,
  },
  ['revokedAt'],
);
const envelope = closed({ publish: { type: 'array', items: str }, subscribe: { type: 'array', items: str } });

export const componentSchemas: Record<string, JsonSchema> = {
  Error: closed({
    error: closed({ code: { type: 'string', pattern: '^[a-z][a-z0-9-]*$' }, message: str, details: {} }, ['details']),
  }),
  Token: closed({ token: str, expiresAt: time }),
  RobotToken: closed({ token: str, expiresAt: time, bundle: ref('Bundle') }, ['bundle']),
  User: closed({ name: str, role: { type: 'string', enum: ['admin', 'member'] }, createdAt: time, updatedAt: time }),
  UserList: listOf('users', 'User'),
  Grant: closed(
    {
      id: str,
      user: str,
      keystore: str,
      pattern: str,
      capabilities: { type: 'array', items: { type: 'string', enum: ['read', 'manage', 'bind'] } },
      robotSelector: labels,
      permissionsEnvelope: envelope,
      createdBy: str,
      createdAt: time,
    },
    ['robotSelector', 'permissionsEnvelope'],
  ),
  GrantList: listOf('grants', 'Grant'),
  CaCertificate: closed({ certificate: str, subject: str, fingerprintSha256: str, notBefore: time, notAfter: time }),
  Keystore: closed(keystore),
  ImportedKeystore: closed({ ...keystore, enclaves: { type: 'integer', minimum: 0 } }),
  KeystoreList: listOf('keystores', 'Keystore'),
  EnclaveSummary: closed(enclaveSummary),
  // The certificate, permissions and policy come only to callers who may `read` the enclave.
  Enclave: closed({ ...enclaveSummary, ...enclaveDetail }, Object.keys(enclaveDetail)),
  EnclaveList: listOf('enclaves', 'EnclaveSummary'),
  EnclaveBatch: closed({ created: { type: 'integer', minimum: 1 }, enclaves: { type: 'array', items: ref('Enclave') } }),
  Robot: closed(robot),
  RobotList: listOf('robots', 'Robot'),
  RobotDetail: closed(
    {
      ...robot,
      report: nullable(
        closed({
          revision: nullable(str),
          filesystem: nullable(str),
          clockSkewMs: nullable({ type: 'integer' }),
          agentVersion: nullable(str),
          enclaves: { type: 'array', items: closed({ keystore: str, path: str, notAfter: str }) },
          reportedAt: time,
          lastSeenAt: time,
        }),
      ),
      enrollmentTokens: { type: 'array', items: closed({ expiresAt: time, reenroll: { type: 'boolean' }, createdBy: str, createdAt: time }) },
      identities: { type: 'array', items: ref('Identity') },
    },
    ['enrollmentTokens'],
  ),
  Session: closed({
    name: str,
    role: { type: 'string', enum: ['admin', 'member'] },
    // A member's own grants (what the console may offer them); empty for an admin, who may do everything.
    grants: { type: 'array', items: closed({ keystore: str, pattern: str, capabilities: { type: 'array', items: { type: 'string', enum: ['read', 'manage', 'bind'] } } }) },
  }),
  Fleet: closed({
    generatedAt: time,
    silentMinutes: { type: 'integer' },
    counts: closed(Object.fromEntries(FLEET_STATES.map((k) => [k, { type: 'integer', minimum: 0 }]))),
    robots: {
      type: 'array',
      items: closed({
        name: str,
        labels,
        enrolled: { type: 'boolean' },
        enrolledAt: nullable(time),
        agentVersion: nullable(str),
        createdAt: time,
        lastSeenAt: nullable(time),
        reportedAt: nullable(time),
        clockSkewMs: nullable({ type: 'integer' }),
        filesystem: nullable(str),
        heldRevision: nullable(str),
        currentRevision: nullable(str),
        state: { type: 'string', enum: [...FLEET_STATES] },
      }),
    },
  }),
  Identity: identity,
  IdentityList: listOf('identities', 'Identity'),
  IssuedIdentity: closed({
    keystore: str,
    enclave: str,
    serial: { type: 'string', pattern: '^[0-9a-f]+$' },
    notAfter: time,
    certificate: str,
    revision: str,
    renewAfter: time,
  }, ['renewAfter']),
  Enrolled: closed({ robot: ref('Robot') }),
  EnrollmentToken: closed({ token: str, expiresAt: time, reenroll: { type: 'boolean' } }),
  // As made: whether it holds (`status`) is told when bindings are listed.
  NewBinding: closed(binding, ['robot', 'selector']),
  Binding: closed(
    { ...binding, status: { type: 'string', enum: ['active', 'limited', 'suspended'] }, statusReason: str },
    ['robot', 'selector', 'statusReason'],
  ),
  BindingList: listOf('bindings', 'Binding'),
  Bundle: closed({
    revision: str,
    robot: str,
    keystores: {
      type: 'array',
      items: closed({
        name: str,
        enclaves: {
          type: 'array',
          items: closed(
            {
              path: str,
              notAfter: time,
              identity: { type: 'string', enum: ['per-robot'], description: 'absent: shared (key.pem is in files)' },
              identitySerial: { type: 'string', pattern: '^[0-9a-f]+$', description: "per-robot: the serial of the robot's own cert.pem" },
              files: { type: 'object', additionalProperties: str },
            },
            ['identity', 'identitySerial'],
          ),
        },
      }),
    },
  }),
  AuditEntry: closed({
    id: { type: 'integer' },
    at: time,
    actor: str,
    actorKind: { type: 'string', enum: ['user', 'robot', 'anonymous', 'system'] },
    action: str,
    target: nullable(str),
    result: { type: 'string', enum: ['success', 'failure', 'denied'] },
    grant: nullable(str),
    details: nullable({ type: 'object' }),
    hash: str,
  }),
  AuditList: listOf('entries', 'AuditEntry'),
  AuditVerdict: {
    anyOf: [
      closed({ ok: { const: true }, entries: { type: 'integer' }, head: str }),
      closed({ ok: { const: false }, entries: { type: 'integer' }, brokenAt: { type: 'integer' }, reason: str }),
    ],
  },
  OpenApiDocument: {
    type: 'object',
    required: ['openapi', 'info', 'paths'],
    properties: { openapi: { type: 'string', pattern: '^3\\.1\\.' }, info: { type: 'object' }, paths: { type: 'object' } },
  },
};
