import type { ZodTypeAny } from 'zod';
import { AuditQuery } from '../audit/audit.routes.js';
import { LoginBody } from '../auth/auth.routes.js';
import { CreateBinding } from '../bindings/bindings.routes.js';
import { BundleQuery } from '../bundles/bundles.routes.js';
import { CreateGrant, ListQuery as GrantsQuery, PatchGrant } from '../grants/grants.routes.js';
import { IdentityRequest } from '../identities/identities.routes.js';
import { BatchCreate, CreateEnclave, CreateKeystore, ExportQuery, PatchEnclave, PolicyQuery, Rotate } from '../keystores/keystores.routes.js';
import { CreateRobot, Enroll, PatchRobot, Report, RobotLogin, TokenBody } from '../robots/robots.routes.js';
import { CreateUser, PatchUser } from '../users/users.routes.js';
import { FleetQuery } from '../console/console.routes.js';

/** A request body: JSON described by a zod schema, or raw bytes/text of given media types. */
export type BodySpec = { json: ZodTypeAny; optional?: boolean } | { raw: string[]; description: string };

const REPORT_LATER =
  '`next-contact` when a large fleet waits on this server: send the report after this bundle with the next answer, not at once';

/** What the guard cannot tell about one operation; `METHOD /template` keys match the app's routes. */
export interface OperationSpec {
  tag: string;
  summary: string;
  body?: BodySpec;
  query?: ZodTypeAny;
  /**
   * The success answer: a component schema name, `null` for no body, or another media type; `headers` sent
   * only in some answers (documented `required: false`), by name → description.
   */
  ok: { status: number; schema: string | null; mediaType?: string; description?: string; headers?: Record<string, string> };
  /** Other answers this operation gives besides the guard's 401/403 (which come from the route's guard). */
  also?: Partial<Record<number, string>>;
}

const XML = ['application/xml'];
const GZIP = ['application/gzip'];
const NOT_FOUND = 'not found (for a member also: not theirs to see)';
const INVALID = 'invalid input: `details` lists every problem';

export const OPERATIONS: Record<string, OperationSpec> = {
  'GET /v1/openapi.json': {
    tag: 'meta',
    summary: 'This description of the API (OpenAPI 3.1)',
    ok: { status: 200, schema: 'OpenApiDocument' },
    also: { 401: 'a bearer token was sent and is invalid or expired (send none)' },
  },

  'POST /v1/auth/login': {
    tag: 'auth',
    summary: 'Sign in with a user name and password',
    body: { json: LoginBody },
    ok: { status: 200, schema: 'Token' },
    also: { 401: 'invalid-credentials (same for an unknown user and a wrong password)', 422: INVALID },
  },
  'POST /v1/enroll': {
    tag: 'robot',
    summary: 'Enroll a robot: one-time enrollment token + device public key',
    body: { json: Enroll },
    ok: { status: 201, schema: 'Enrolled' },
    also: { 401: 'invalid-enrollment-token (unknown, expired or used)', 422: 'invalid input or invalid-public-key' },
  },
  'POST /v1/auth/robot': {
    tag: 'robot',
    summary: 'Robot sign-in with an assertion signed by its device key (with `bundle: true`, its bundle in the same answer)',
    body: { json: RobotLogin },
    ok: { status: 200, schema: 'RobotToken', headers: { 'Enclave-Report': REPORT_LATER } },
    also: { 401: 'invalid-assertion', 422: INVALID },
  },
  'POST /v1/robot/report': {
    tag: 'robot',
    summary: "The agent's report: revision held, filesystem, clock skew, enclaves held",
    body: { json: Report },
    ok: { status: 204, schema: null },
    also: { 422: INVALID },
  },
  'POST /v1/robot/identity': {
    tag: 'robot',
    summary: "A certificate for the robot's own key in a per-robot enclave (PKCS#10 CSR, proof of possession)",
    body: { json: IdentityRequest },
    ok: { status: 201, schema: 'IssuedIdentity' },
    also: {
      404: 'no such enclave bound to this robot',
      409: 'key-reused (the key was certified before), identity-mode-shared, enclave-expired',
      422: 'invalid input or invalid-csr (malformed, not P-256, signature does not verify)',
      429: 'too many requests for this enclave (`Retry-After`)',
    },
  },
  'GET /v1/robot/bundle': {
    tag: 'robot',
    summary:
      "The robot's bundle (long poll with `wait` and `If-None-Match`). With `watch` instead, a watch: the `200` comes at once as `application/x-ndjson` and carries one bundle per line (gzipped: each line its own gzip member), the current one unless it is the `If-None-Match` revision, then each new one, until `watch` seconds have passed",
    query: BundleQuery,
    ok: { status: 200, schema: 'Bundle', headers: { 'Enclave-Report': REPORT_LATER } },
    also: { 304: 'unchanged since `If-None-Match` (after `wait` seconds at most)', 422: INVALID },
  },

  'GET /v1/users': { tag: 'users', summary: 'List users', ok: { status: 200, schema: 'UserList' } },
  'POST /v1/users': { tag: 'users', summary: 'Create a user', body: { json: CreateUser }, ok: { status: 201, schema: 'User' }, also: { 409: 'the user exists', 422: INVALID } },
  'GET /v1/users/{name}': { tag: 'users', summary: 'One user', ok: { status: 200, schema: 'User' }, also: { 404: 'no such user' } },
  'PATCH /v1/users/{name}': {
    tag: 'users',
    summary: "Change a user's password or role",
    body: { json: PatchUser },
    ok: { status: 200, schema: 'User' },
    also: { 404: 'no such user', 409: 'last-admin: demoting the last admin', 422: INVALID },
  },
  'DELETE /v1/users/{name}': { tag: 'users', summary: 'Delete a user with their grants', ok: { status: 204, schema: null }, also: { 404: 'no such user', 409: 'last-admin' } },

  'GET /v1/grants': { tag: 'grants', summary: 'List grants', query: GrantsQuery, ok: { status: 200, schema: 'GrantList' } },
  'POST /v1/grants': { tag: 'grants', summary: 'Grant a member capabilities on enclaves', body: { json: CreateGrant }, ok: { status: 201, schema: 'Grant' }, also: { 404: 'no such user or keystore', 422: INVALID } },
  'PATCH /v1/grants/{id}': { tag: 'grants', summary: "Change a grant's capabilities, robot selector or envelope", body: { json: PatchGrant }, ok: { status: 200, schema: 'Grant' }, also: { 404: 'no such grant', 422: INVALID } },
  'DELETE /v1/grants/{id}': { tag: 'grants', summary: 'Delete a grant and the bindings made through it', ok: { status: 204, schema: null }, also: { 404: 'no such grant' } },

  'GET /v1/keystores': { tag: 'keystores', summary: 'Keystores the caller can see', ok: { status: 200, schema: 'KeystoreList' } },
  'POST /v1/keystores': { tag: 'keystores', summary: 'Create a keystore (generates its CAs and governance)', body: { json: CreateKeystore }, ok: { status: 201, schema: 'Keystore' }, also: { 409: 'the keystore exists', 422: INVALID } },
  'GET /v1/keystores/{ks}': { tag: 'keystores', summary: 'One keystore', ok: { status: 200, schema: 'Keystore' }, also: { 404: NOT_FOUND } },
  'DELETE /v1/keystores/{ks}': { tag: 'keystores', summary: 'Delete a keystore with its enclaves, grants and bindings', ok: { status: 204, schema: null }, also: { 404: 'no such keystore' } },
  'POST /v1/keystores/{ks}/import': {
    tag: 'keystores',
    summary: 'Import an sros2 keystore folder (.tar.gz)',
    body: { raw: GZIP, description: '.tar.gz of an sros2 keystore folder' },
    ok: { status: 201, schema: 'ImportedKeystore' },
    also: { 409: 'the keystore exists', 422: 'invalid-keystore: `details` lists every problem' },
  },
  'GET /v1/keystores/{ks}/export': {
    tag: 'keystores',
    summary: "Export in sros2's layout (.tar.gz)",
    query: ExportQuery,
    ok: { status: 200, schema: null, mediaType: 'application/gzip', description: 'the keystore folder as .tar.gz' },
    also: { 404: 'no such keystore', 422: INVALID },
  },
  'PUT /v1/keystores/{ks}/governance': {
    tag: 'keystores',
    summary: 'Replace the governance (validated, re-signed)',
    body: { raw: XML, description: 'governance XML' },
    ok: { status: 200, schema: 'Keystore' },
    also: { 404: 'no such keystore', 422: 'invalid-governance' },
  },

  'GET /v1/keystores/{ks}/enclaves': { tag: 'enclaves', summary: 'Enclaves the caller may read', ok: { status: 200, schema: 'EnclaveList' }, also: { 404: NOT_FOUND } },
  'POST /v1/keystores/{ks}/enclaves': {
    tag: 'enclaves',
    summary: 'Create an enclave (key, certificate, signed permissions)',
    body: { json: CreateEnclave },
    ok: { status: 201, schema: 'Enclave' },
    also: { 404: NOT_FOUND, 409: 'the enclave exists (enclave-revoked when revoked)', 422: 'invalid input, invalid-enclave-name or invalid-policy' },
  },
  'POST /v1/keystores/{ks}/enclaves:batch': {
    tag: 'enclaves',
    summary: 'Create many enclaves, all or nothing',
    body: { json: BatchCreate },
    ok: { status: 201, schema: 'EnclaveBatch' },
    also: { 404: NOT_FOUND, 422: INVALID },
  },
  'GET /v1/keystores/{ks}/enclaves/{path}': { tag: 'enclaves', summary: 'One enclave with its certificate and permissions', ok: { status: 200, schema: 'Enclave' }, also: { 404: NOT_FOUND } },
  'PUT /v1/keystores/{ks}/enclaves/{path}/policy': {
    tag: 'enclaves',
    summary: "Replace an enclave's policy (permissions re-made and re-signed)",
    query: PolicyQuery,
    body: { raw: [...XML, ...GZIP], description: 'policy XML, or a policy folder as .tar.gz (`file` picks the main file)' },
    ok: { status: 200, schema: 'Enclave' },
    also: { 404: NOT_FOUND, 422: 'invalid-policy' },
  },
  'POST /v1/keystores/{ks}/enclaves/{path}/rotate': {
    tag: 'enclaves',
    summary: 'New key and certificate (re-issues a revoked enclave)',
    body: { json: Rotate, optional: true },
    ok: { status: 200, schema: 'Enclave' },
    also: { 404: NOT_FOUND, 422: INVALID },
  },
  'PATCH /v1/keystores/{ks}/enclaves/{path}': {
    tag: 'enclaves',
    summary: "Switch an enclave's identity mode (shared key, or a key per robot)",
    body: { json: PatchEnclave },
    ok: { status: 200, schema: 'Enclave' },
    also: { 404: NOT_FOUND, 409: 'enclave-revoked', 422: INVALID },
  },
  'POST /v1/keystores/{ks}/enclaves/{path}/revoke': { tag: 'enclaves', summary: 'Revoke: its serial joins the CRL', ok: { status: 200, schema: 'Enclave' }, also: { 404: NOT_FOUND } },
  'DELETE /v1/keystores/{ks}/enclaves/{path}': { tag: 'enclaves', summary: 'Delete an enclave (revoked first) with its bindings', ok: { status: 204, schema: null }, also: { 404: NOT_FOUND } },

  'GET /v1/robots': { tag: 'robots', summary: 'Robots the caller can see', ok: { status: 200, schema: 'RobotList' } },
  'POST /v1/robots': { tag: 'robots', summary: 'Register a robot', body: { json: CreateRobot }, ok: { status: 201, schema: 'Robot' }, also: { 409: 'the robot exists', 422: INVALID } },
  'GET /v1/robots/{name}': { tag: 'robots', summary: "One robot with its agent's last report", ok: { status: 200, schema: 'RobotDetail' }, also: { 404: NOT_FOUND } },
  'PATCH /v1/robots/{name}': { tag: 'robots', summary: "Replace a robot's labels", body: { json: PatchRobot }, ok: { status: 200, schema: 'Robot' }, also: { 404: 'no such robot', 422: INVALID } },
  'DELETE /v1/robots/{name}': { tag: 'robots', summary: 'Delete a robot', ok: { status: 204, schema: null }, also: { 404: 'no such robot' } },
  'POST /v1/robots/{name}/enrollment-tokens': {
    tag: 'robots',
    summary: 'A one-time enrollment token',
    body: { json: TokenBody, optional: true },
    ok: { status: 201, schema: 'EnrollmentToken' },
    also: { 404: 'no such robot', 409: 'robot-enrolled (mint with reenroll: true)', 422: INVALID },
  },
  'POST /v1/robots/{name}/revoke-key': { tag: 'robots', summary: "Forget the robot's device key (and revoke its per-robot certificates)", ok: { status: 200, schema: 'Robot' }, also: { 404: 'no such robot' } },
  'GET /v1/robots/{name}/identities': {
    tag: 'robots',
    summary: "The robot's per-robot enclave certificates (serial, validity, status)",
    ok: { status: 200, schema: 'IdentityList' },
    also: { 404: NOT_FOUND },
  },
  'DELETE /v1/robots/{name}/identities/{ks}/{serial}': {
    tag: 'robots',
    summary: "Revoke one of the robot's certificates: that serial alone joins the keystore's CRL",
    ok: { status: 204, schema: null },
    also: { 404: 'no such robot or identity (for a member also: not theirs)', 409: 'identity-revoked' },
  },

  'GET /v1/bindings': { tag: 'bindings', summary: 'Bindings on enclaves the caller may read', ok: { status: 200, schema: 'BindingList' } },
  'POST /v1/bindings': {
    tag: 'bindings',
    summary: 'Bind an enclave to a robot or a label selector',
    body: { json: CreateBinding },
    ok: { status: 201, schema: 'NewBinding' },
    also: { 404: 'no such keystore, enclave or robot (for a member also: not theirs)', 409: 'binding-exists', 422: INVALID },
  },
  'DELETE /v1/bindings/{id}': { tag: 'bindings', summary: 'Remove a binding', ok: { status: 204, schema: null }, also: { 404: 'no such binding' } },

  'GET /v1/audit': { tag: 'audit', summary: 'The audit log, newest first', query: AuditQuery, ok: { status: 200, schema: 'AuditList' }, also: { 422: INVALID } },
  'GET /v1/session': { tag: 'auth', summary: "The signed-in user's name and role", ok: { status: 200, schema: 'Session' } },
  'GET /v1/fleet': {
    tag: 'robots',
    summary: 'The fleet at a glance: each visible robot with its last report and whether it holds its current revision (up to date, behind, silent)',
    query: FleetQuery,
    ok: { status: 200, schema: 'Fleet' },
    also: { 422: INVALID },
  },

  'GET /v1/audit/verify': { tag: 'audit', summary: "Recompute the audit log's hash chain", ok: { status: 200, schema: 'AuditVerdict' } },
};
