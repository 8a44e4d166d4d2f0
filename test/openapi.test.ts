import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { routesOf, type RouteInfo } from '../server/openapi/routes.js';
import { bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { validate } from './helpers/json-schema.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';
import { FIXTURES, openssl } from './helpers/tools.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Call = () => PromiseLike<request.Response>;
/** For one operation: a concrete URL (for the guard's 401/403) and a request per status that makes it happen. */
interface Cases {
  url: string;
  statuses: Partial<Record<number, Call>>;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const SCHEMA_KEYWORDS = new Set([
  '$ref', 'type', 'enum', 'const', 'format', 'pattern', 'minLength', 'maxLength', 'minimum', 'maximum', 'minItems', 'maxItems', 'items',
  'required', 'properties', 'additionalProperties', 'propertyNames', 'anyOf', 'description', 'default', 'contentMediaType',
]);

/** Every key at a schema position is a JSON Schema keyword the validator knows (no typo passes as an annotation). */
function checkSchema(schema: unknown, at: string, problems: string[]): void {
  if (typeof schema === 'boolean') return;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return void problems.push(`${at}: not a schema`);
  const s = schema as Json;
  for (const k of Object.keys(s)) if (!SCHEMA_KEYWORDS.has(k)) problems.push(`${at}: unknown keyword ${k}`);
  for (const [k, sub] of Object.entries((s.properties ?? {}) as Json)) checkSchema(sub, `${at}.properties.${k}`, problems);
  for (const k of ['items', 'additionalProperties', 'propertyNames']) if (k in s) checkSchema(s[k], `${at}.${k}`, problems);
  if (s.anyOf) (s.anyOf as unknown[]).forEach((sub, i) => checkSchema(sub, `${at}.anyOf[${i}]`, problems));
  if (s.required && !(Array.isArray(s.required) && s.required.every((r: unknown) => typeof r === 'string' && r in (s.properties ?? {})))) {
    problems.push(`${at}: required names a property that is not described`);
  }
}

const POLICY = (p: string) =>
  `<policy version="0.2.0"><enclaves><enclave path="${p}"><profiles><profile ns="/" node="n"><topics publish="ALLOW"><topic>chatter</topic></topics></profile></profiles></enclave></enclaves></policy>`;

describe('OpenAPI description (GET /v1/openapi.json)', () => {
  let ctx: TestContext;
  let doc: Json;
  let routes: RouteInfo[];
  const tok = { admin: '', member: '', robot: '' };
  let counter = 0;
  const uniq = (p = 'x') => `${p}${++counter}`;
  const A = () => bearer(tok.admin);
  const app = () => request(ctx.app);

  before(async () => {
    ctx = await makeTestApp();
    tok.admin = await ctx.adminToken();
    const res = await app().get('/v1/openapi.json').expect(200);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    doc = res.body as Json;
    routes = routesOf(ctx.app);

    await app().post('/v1/keystores').set(A()).send({ name: 'ks' }).expect(201);
    await app().post('/v1/users').set(A()).send({ name: 'mem', password: 'member-password-xyz' }).expect(201);
    await app().post('/v1/grants').set(A()).send({ user: 'mem', keystore: 'ks', pattern: '/m/**', capabilities: ['read', 'manage', 'bind'] }).expect(201);
    tok.member = await ctx.login('mem', 'member-password-xyz');
    await app().post('/v1/keystores/ks/enclaves').set(A()).send({ path: '/m/base' }).expect(201);
    tok.robot = await enrolledRobot('bot');
    await app().post('/v1/bindings').set(A()).send({ keystore: 'ks', enclave: '/m/base', robot: 'bot' }).expect(201);
    // Per-robot enclaves bound to bot, one per case (each robot may get a few certificates per enclave at once).
    const own = ['/m/own_a', '/m/own_b', '/m/own_c', '/m/own_d', '/m/own_e', '/m/own_limited'];
    await app().post('/v1/keystores/ks/enclaves:batch').set(A()).send({ paths: own, identityMode: 'per-robot' }).expect(201);
    for (const enclave of own) await app().post('/v1/bindings').set(A()).send({ keystore: 'ks', enclave, robot: 'bot' }).expect(201);
    // A report, so that a robot's page shows one (and its schema is checked).
    await app()
      .post('/v1/robot/report')
      .set(bearer(tok.robot))
      .send({ revision: '1', filesystem: 'tmpfs', clockSkewMs: 12, agentVersion: '0.1.0', enclaves: [{ keystore: 'ks', path: '/m/base', notAfter: new Date(0).toISOString() }] })
      .expect(204);
  });
  after(async () => {
    await ctx.services.bundles.close();
    await ctx.close();
  });

  /** A robot registered, enrolled with a real device key, signed in with a real assertion: its token. */
  async function enrolledRobot(name: string): Promise<string> {
    await app().post('/v1/robots').set(A()).send({ name, labels: { site: 'a' } }).expect(201);
    const login = await app().post('/v1/auth/robot').send({ assertion: assertion(name, await enroll(name)) }).expect(200);
    ctx.secrets.add(login.body.token);
    return login.body.token as string;
  }
  /** A one-time enrollment token for a registered robot. */
  async function enrollmentToken(name: string): Promise<string> {
    const t = await app().post(`/v1/robots/${name}/enrollment-tokens`).set(A()).send({}).expect(201);
    ctx.secrets.add(t.body.token);
    return t.body.token as string;
  }
  /** Enrolls a registered robot with a new device key, which it returns. */
  async function enroll(name: string): Promise<DeviceKey> {
    const key = deviceKey();
    await app().post('/v1/enroll').send({ token: await enrollmentToken(name), publicKey: key.publicKeyPem }).expect(201);
    return key;
  }
  /** A PKCS#10 request for a new P-256 key, made by openssl. */
  const csr = (): string => {
    const dir = fs.mkdtempSync(path.join(ctx.dir, 'csr-'));
    const key = path.join(dir, 'key.pem');
    assert.equal(openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]).status, 0);
    const req = openssl(['req', '-new', '-key', key, '-subj', '/CN=bot']);
    assert.equal(req.status, 0, req.out);
    return req.stdout;
  };
  const identity = (enclave: string, pem = csr()) => app().post('/v1/robot/identity').set(bearer(tok.robot)).send({ keystore: 'ks', enclave, csr: pem });
  /** A certificate of bot's, issued now: its serial. */
  const ownSerial = async (enclave: string) => (await identity(enclave).expect(201)).body.serial as string;
  const user = async () => {
    const name = uniq('u');
    await app().post('/v1/users').set(A()).send({ name, password: 'some-password-123' }).expect(201);
    return name;
  };
  const grant = async () => (await app().post('/v1/grants').set(A()).send({ user: 'mem', keystore: 'ks', pattern: `/${uniq('g')}`, capabilities: ['read'] }).expect(201)).body.id as string;
  const keystore = async () => {
    const name = uniq('k');
    await app().post('/v1/keystores').set(A()).send({ name }).expect(201);
    return name;
  };
  const enclave = async () => {
    const p = `m/${uniq('e')}`;
    await app().post('/v1/keystores/ks/enclaves').set(A()).send({ path: `/${p}` }).expect(201);
    return p;
  };
  const robot = async () => {
    const name = uniq('r');
    await app().post('/v1/robots').set(A()).send({ name }).expect(201);
    return name;
  };
  const binding = async () => {
    const e = await enclave();
    return (await app().post('/v1/bindings').set(A()).send({ keystore: 'ks', enclave: `/${e}`, robot: 'bot' }).expect(201)).body.id as string;
  };

  const cases: Record<string, Cases> = {
    'GET /v1/openapi.json': {
      url: '/v1/openapi.json',
      statuses: { 200: () => app().get('/v1/openapi.json'), 401: () => app().get('/v1/openapi.json').set(bearer('not-a-token')) },
    },
    'POST /v1/auth/login': {
      url: '/v1/auth/login',
      statuses: {
        200: () => app().post('/v1/auth/login').send({ username: 'mem', password: 'member-password-xyz' }),
        401: () => app().post('/v1/auth/login').send({ username: 'mem', password: 'wrong-password-123' }),
        422: () => app().post('/v1/auth/login').send({}),
      },
    },
    'POST /v1/enroll': {
      url: '/v1/enroll',
      statuses: {
        201: async () => app().post('/v1/enroll').send({ token: await enrollmentToken(await robot()), publicKey: deviceKey('ed25519').publicKeyPem, agentVersion: '0.1.0' }),
        401: () => app().post('/v1/enroll').send({ token: 'no-such-enrollment-token', publicKey: deviceKey().publicKeyPem }),
        422: () => app().post('/v1/enroll').send({}),
      },
    },
    'POST /v1/auth/robot': {
      url: '/v1/auth/robot',
      statuses: {
        200: async () => {
          // With the bundle: the larger of the two answers (the plain one is the token alone).
          const name = await robot();
          return app().post('/v1/auth/robot').send({ assertion: assertion(name, await enroll(name)), bundle: true });
        },
        401: () => app().post('/v1/auth/robot').send({ assertion: 'a'.repeat(40) }),
        422: () => app().post('/v1/auth/robot').send({}),
      },
    },
    'POST /v1/robot/report': {
      url: '/v1/robot/report',
      statuses: {
        204: () => app().post('/v1/robot/report').set(bearer(tok.robot)).send({ revision: '1', filesystem: 'tmpfs', clockSkewMs: 0, agentVersion: '0.1.0', enclaves: [] }),
        422: () => app().post('/v1/robot/report').set(bearer(tok.robot)).send({ clockSkewMs: 1e15 }),
      },
    },
    'GET /v1/robot/bundle': {
      url: '/v1/robot/bundle',
      statuses: {
        200: () => app().get('/v1/robot/bundle').set(bearer(tok.robot)),
        304: async () => {
          const first = await app().get('/v1/robot/bundle').set(bearer(tok.robot)).expect(200);
          return app().get('/v1/robot/bundle').set(bearer(tok.robot)).set('If-None-Match', String(first.headers.etag));
        },
        422: () => app().get('/v1/robot/bundle?wait=99').set(bearer(tok.robot)),
      },
    },

    'POST /v1/robot/identity': {
      url: '/v1/robot/identity',
      statuses: {
        201: () => identity('/m/own_a'),
        404: () => identity('/m/none'),
        409: async () => {
          const pem = csr();
          await identity('/m/own_b', pem).expect(201);
          return identity('/m/own_b', pem);
        },
        422: () => identity('/m/own_a', 'not a certificate request'),
        429: async () => {
          for (let i = 0; i < 3; i++) await identity('/m/own_limited').expect(201);
          return identity('/m/own_limited');
        },
      },
    },

    'GET /v1/users': { url: '/v1/users', statuses: { 200: () => app().get('/v1/users').set(A()) } },
    'POST /v1/users': {
      url: '/v1/users',
      statuses: {
        201: () => app().post('/v1/users').set(A()).send({ name: uniq('u'), password: 'some-password-123', role: 'member' }),
        409: () => app().post('/v1/users').set(A()).send({ name: 'mem', password: 'some-password-123' }),
        422: () => app().post('/v1/users').set(A()).send({ name: 'Not A Name', password: 'short' }),
      },
    },
    'GET /v1/users/{name}': {
      url: '/v1/users/mem',
      statuses: { 200: () => app().get('/v1/users/mem').set(A()), 404: () => app().get('/v1/users/nobody').set(A()) },
    },
    'PATCH /v1/users/{name}': {
      url: '/v1/users/mem',
      statuses: {
        200: async () => app().patch(`/v1/users/${await user()}`).set(A()).send({ password: 'another-password-456' }),
        404: () => app().patch('/v1/users/nobody').set(A()).send({ role: 'member' }),
        409: () => app().patch('/v1/users/admin').set(A()).send({ role: 'member' }),
        422: () => app().patch('/v1/users/mem').set(A()).send({}),
      },
    },
    'DELETE /v1/users/{name}': {
      url: '/v1/users/mem',
      statuses: {
        204: async () => app().delete(`/v1/users/${await user()}`).set(A()),
        404: () => app().delete('/v1/users/nobody').set(A()),
        409: () => app().delete('/v1/users/admin').set(A()),
      },
    },

    'GET /v1/grants': { url: '/v1/grants', statuses: { 200: () => app().get('/v1/grants?user=mem').set(A()) } },
    'POST /v1/grants': {
      url: '/v1/grants',
      statuses: {
        201: () =>
          app()
            .post('/v1/grants')
            .set(A())
            .send({ user: 'mem', keystore: 'ks', pattern: '/s/**', capabilities: ['bind'], robotSelector: { site: 'a' }, permissionsEnvelope: { publish: ['rt/a/**'] } }),
        404: () => app().post('/v1/grants').set(A()).send({ user: 'mem', keystore: 'nope', pattern: '/a', capabilities: ['read'] }),
        422: () => app().post('/v1/grants').set(A()).send({ user: 'mem', keystore: 'ks', pattern: '/a', capabilities: ['fly'] }),
      },
    },
    'PATCH /v1/grants/{id}': {
      url: '/v1/grants/some-id',
      statuses: {
        200: async () => app().patch(`/v1/grants/${await grant()}`).set(A()).send({ capabilities: ['read', 'manage'] }),
        404: () => app().patch('/v1/grants/no-such-grant').set(A()).send({ capabilities: ['read'] }),
        422: async () => app().patch(`/v1/grants/${await grant()}`).set(A()).send({}),
      },
    },
    'DELETE /v1/grants/{id}': {
      url: '/v1/grants/some-id',
      statuses: { 204: async () => app().delete(`/v1/grants/${await grant()}`).set(A()), 404: () => app().delete('/v1/grants/no-such-grant').set(A()) },
    },

    'GET /v1/keystores': { url: '/v1/keystores', statuses: { 200: () => app().get('/v1/keystores').set(bearer(tok.member)) } },
    'POST /v1/keystores': {
      url: '/v1/keystores',
      statuses: {
        201: () => app().post('/v1/keystores').set(A()).send({ name: uniq('k'), splitCa: true, domainId: 3 }),
        409: () => app().post('/v1/keystores').set(A()).send({ name: 'ks' }),
        422: () => app().post('/v1/keystores').set(A()).send({ name: 'k', domainId: -1 }),
      },
    },
    'GET /v1/keystores/{ks}': {
      url: '/v1/keystores/ks',
      statuses: { 200: () => app().get('/v1/keystores/ks').set(bearer(tok.member)), 404: () => app().get('/v1/keystores/nope').set(A()) },
    },
    'DELETE /v1/keystores/{ks}': {
      url: '/v1/keystores/ks',
      statuses: { 204: async () => app().delete(`/v1/keystores/${await keystore()}`).set(A()), 404: () => app().delete('/v1/keystores/nope').set(A()) },
    },
    'POST /v1/keystores/{ks}/import': {
      url: '/v1/keystores/ks/import',
      statuses: {
        201: () => app().post(`/v1/keystores/${uniq('i')}/import`).set(A()).type('application/gzip').send(fs.readFileSync(path.join(FIXTURES, 'talker-listener-keystore.tar.gz'))),
        409: () => app().post('/v1/keystores/ks/import').set(A()).type('application/gzip').send(fs.readFileSync(path.join(FIXTURES, 'talker-listener-keystore.tar.gz'))),
        422: () => app().post(`/v1/keystores/${uniq('i')}/import`).set(A()).type('application/gzip').send(Buffer.from('not an archive')),
      },
    },
    'GET /v1/keystores/{ks}/export': {
      url: '/v1/keystores/ks/export',
      statuses: {
        200: () => app().get('/v1/keystores/ks/export?private=false').set(A()),
        404: () => app().get('/v1/keystores/nope/export').set(A()),
        422: () => app().get('/v1/keystores/ks/export?private=maybe').set(A()),
      },
    },
    'PUT /v1/keystores/{ks}/governance': {
      url: '/v1/keystores/ks/governance',
      statuses: {
        200: () => app().put('/v1/keystores/ks/governance').set(A()).type('application/xml').send(fs.readFileSync(path.join(FIXTURES, 'governance.default.xml'), 'utf8')),
        404: () => app().put('/v1/keystores/nope/governance').set(A()).type('application/xml').send(fs.readFileSync(path.join(FIXTURES, 'governance.default.xml'), 'utf8')),
        422: () => app().put('/v1/keystores/ks/governance').set(A()).type('application/xml').send('<dds><nope/></dds>'),
      },
    },

    'GET /v1/keystores/{ks}/enclaves': {
      url: '/v1/keystores/ks/enclaves',
      statuses: { 200: () => app().get('/v1/keystores/ks/enclaves').set(bearer(tok.member)), 404: () => app().get('/v1/keystores/nope/enclaves').set(A()) },
    },
    'POST /v1/keystores/{ks}/enclaves': {
      url: '/v1/keystores/ks/enclaves',
      statuses: {
        201: () => app().post('/v1/keystores/ks/enclaves').set(bearer(tok.member)).send({ path: `/m/${uniq('e')}`, validityDays: 30 }),
        404: () => app().post('/v1/keystores/ks/enclaves').set(bearer(tok.member)).send({ path: '/outside/grant' }),
        409: () => app().post('/v1/keystores/ks/enclaves').set(A()).send({ path: '/m/base' }),
        422: () => app().post('/v1/keystores/ks/enclaves').set(A()).send({ path: '/m/Bad Name' }),
      },
    },
    'POST /v1/keystores/{ks}/enclaves:batch': {
      url: '/v1/keystores/ks/enclaves:batch',
      statuses: {
        201: () => app().post('/v1/keystores/ks/enclaves:batch').set(A()).send({ paths: [`/m/${uniq('b')}`, `/m/${uniq('b')}`] }),
        404: () => app().post('/v1/keystores/nope/enclaves:batch').set(A()).send({ paths: ['/m/a'] }),
        422: () => app().post('/v1/keystores/ks/enclaves:batch').set(A()).send({ paths: [] }),
      },
    },
    'GET /v1/keystores/{ks}/enclaves/{path}': {
      url: '/v1/keystores/ks/enclaves/m/base',
      statuses: {
        200: () => app().get('/v1/keystores/ks/enclaves/m/base').set(bearer(tok.member)),
        404: () => app().get('/v1/keystores/ks/enclaves/m/none').set(A()),
      },
    },
    'PUT /v1/keystores/{ks}/enclaves/{path}/policy': {
      url: '/v1/keystores/ks/enclaves/m/base/policy',
      statuses: {
        200: async () => {
          const e = await enclave();
          return app().put(`/v1/keystores/ks/enclaves/${e}/policy`).set(bearer(tok.member)).type('application/xml').send(POLICY(`/${e}`));
        },
        404: () => app().put('/v1/keystores/ks/enclaves/m/none/policy').set(A()).type('application/xml').send(POLICY('/m/none')),
        422: () => app().put('/v1/keystores/ks/enclaves/m/base/policy').set(A()).type('application/xml').send('<policy version="0.2.0"><nonsense/></policy>'),
      },
    },
    'POST /v1/keystores/{ks}/enclaves/{path}/rotate': {
      url: '/v1/keystores/ks/enclaves/m/base/rotate',
      statuses: {
        200: async () => app().post(`/v1/keystores/ks/enclaves/${await enclave()}/rotate`).set(A()).send({ validityDays: 10 }),
        404: () => app().post('/v1/keystores/ks/enclaves/m/none/rotate').set(A()),
        422: () => app().post('/v1/keystores/ks/enclaves/m/base/rotate').set(A()).send({ validityDays: 0 }),
      },
    },
    'PATCH /v1/keystores/{ks}/enclaves/{path}': {
      url: '/v1/keystores/ks/enclaves/m/base',
      statuses: {
        200: async () => app().patch(`/v1/keystores/ks/enclaves/${await enclave()}`).set(bearer(tok.member)).send({ identityMode: 'per-robot' }),
        404: () => app().patch('/v1/keystores/ks/enclaves/m/none').set(A()).send({ identityMode: 'per-robot' }),
        409: async () => {
          const e = await enclave();
          await app().post(`/v1/keystores/ks/enclaves/${e}/revoke`).set(A()).expect(200);
          return app().patch(`/v1/keystores/ks/enclaves/${e}`).set(A()).send({ identityMode: 'per-robot' });
        },
        422: () => app().patch('/v1/keystores/ks/enclaves/m/base').set(A()).send({ identityMode: 'per-fleet' }),
      },
    },
    'POST /v1/keystores/{ks}/enclaves/{path}/revoke': {
      url: '/v1/keystores/ks/enclaves/m/base/revoke',
      statuses: {
        200: async () => app().post(`/v1/keystores/ks/enclaves/${await enclave()}/revoke`).set(A()),
        404: () => app().post('/v1/keystores/ks/enclaves/m/none/revoke').set(A()),
      },
    },
    'DELETE /v1/keystores/{ks}/enclaves/{path}': {
      url: '/v1/keystores/ks/enclaves/m/base',
      statuses: {
        204: async () => app().delete(`/v1/keystores/ks/enclaves/${await enclave()}`).set(A()),
        404: () => app().delete('/v1/keystores/ks/enclaves/m/none').set(A()),
      },
    },

    'GET /v1/robots': { url: '/v1/robots', statuses: { 200: () => app().get('/v1/robots').set(A()) } },
    'POST /v1/robots': {
      url: '/v1/robots',
      statuses: {
        201: () => app().post('/v1/robots').set(A()).send({ name: uniq('r'), labels: { site: 'b' } }),
        409: () => app().post('/v1/robots').set(A()).send({ name: 'bot' }),
        422: () => app().post('/v1/robots').set(A()).send({ name: 'Not A Robot' }),
      },
    },
    'GET /v1/robots/{name}': {
      url: '/v1/robots/bot',
      statuses: { 200: () => app().get('/v1/robots/bot').set(A()), 404: () => app().get('/v1/robots/ghost').set(A()) },
    },
    'PATCH /v1/robots/{name}': {
      url: '/v1/robots/bot',
      statuses: {
        200: async () => app().patch(`/v1/robots/${await robot()}`).set(A()).send({ labels: { site: 'c' } }),
        404: () => app().patch('/v1/robots/ghost').set(A()).send({ labels: {} }),
        422: () => app().patch('/v1/robots/bot').set(A()).send({}),
      },
    },
    'DELETE /v1/robots/{name}': {
      url: '/v1/robots/bot',
      statuses: { 204: async () => app().delete(`/v1/robots/${await robot()}`).set(A()), 404: () => app().delete('/v1/robots/ghost').set(A()) },
    },
    'POST /v1/robots/{name}/enrollment-tokens': {
      url: '/v1/robots/bot/enrollment-tokens',
      statuses: {
        201: async () => {
          const res = await app().post(`/v1/robots/${await robot()}/enrollment-tokens`).set(A()).send({ ttlSeconds: 600 });
          if (res.body?.token) ctx.secrets.add(res.body.token);
          return res;
        },
        404: () => app().post('/v1/robots/ghost/enrollment-tokens').set(A()).send({}),
        409: () => app().post('/v1/robots/bot/enrollment-tokens').set(A()).send({}),
        422: () => app().post('/v1/robots/bot/enrollment-tokens').set(A()).send({ ttlSeconds: 1 }),
      },
    },
    'POST /v1/robots/{name}/revoke-key': {
      url: '/v1/robots/bot/revoke-key',
      statuses: {
        200: async () => {
          const name = uniq('r');
          await enrolledRobot(name);
          return app().post(`/v1/robots/${name}/revoke-key`).set(A());
        },
        404: () => app().post('/v1/robots/ghost/revoke-key').set(A()),
      },
    },

    'GET /v1/robots/{name}/identities': {
      url: '/v1/robots/bot/identities',
      statuses: {
        200: async () => {
          const serial = await ownSerial('/m/own_c');
          await app().delete(`/v1/robots/bot/identities/ks/${serial}`).set(A()).expect(204);
          return app().get('/v1/robots/bot/identities').set(A());
        },
        404: () => app().get('/v1/robots/ghost/identities').set(A()),
      },
    },
    'DELETE /v1/robots/{name}/identities/{ks}/{serial}': {
      url: '/v1/robots/bot/identities/ks/00',
      statuses: {
        204: async () => app().delete(`/v1/robots/bot/identities/ks/${await ownSerial('/m/own_d')}`).set(A()),
        404: () => app().delete('/v1/robots/bot/identities/ks/0123456789abcdef').set(A()),
        409: async () => {
          const serial = await ownSerial('/m/own_e');
          await app().delete(`/v1/robots/bot/identities/ks/${serial}`).set(A()).expect(204);
          return app().delete(`/v1/robots/bot/identities/ks/${serial}`).set(A());
        },
      },
    },

    'GET /v1/bindings': { url: '/v1/bindings', statuses: { 200: () => app().get('/v1/bindings').set(bearer(tok.member)) } },
    'POST /v1/bindings': {
      url: '/v1/bindings',
      statuses: {
        201: async () => app().post('/v1/bindings').set(bearer(tok.member)).send({ keystore: 'ks', enclave: `/${await enclave()}`, selector: { site: 'a' } }),
        404: () => app().post('/v1/bindings').set(A()).send({ keystore: 'ks', enclave: '/m/base', robot: 'ghost' }),
        409: () => app().post('/v1/bindings').set(A()).send({ keystore: 'ks', enclave: '/m/base', robot: 'bot' }),
        422: () => app().post('/v1/bindings').set(A()).send({}),
      },
    },
    'DELETE /v1/bindings/{id}': {
      url: '/v1/bindings/some-id',
      statuses: { 204: async () => app().delete(`/v1/bindings/${await binding()}`).set(A()), 404: () => app().delete('/v1/bindings/no-such-binding').set(A()) },
    },

    'GET /v1/session': { url: '/v1/session', statuses: { 200: () => app().get('/v1/session').set(bearer(tok.member)) } },
    'GET /v1/fleet': {
      url: '/v1/fleet',
      statuses: { 200: () => app().get('/v1/fleet?silentMinutes=5').set(bearer(tok.member)), 422: () => app().get('/v1/fleet?silentMinutes=0').set(A()) },
    },

    'GET /v1/audit': {
      url: '/v1/audit',
      statuses: { 200: () => app().get('/v1/audit?limit=1000&action=enclave.*').set(A()), 422: () => app().get('/v1/audit?limit=0').set(A()) },
    },
    'GET /v1/audit/verify': { url: '/v1/audit/verify', statuses: { 200: () => app().get('/v1/audit/verify').set(A()) } },
  };

  const operations = () =>
    Object.entries(doc.paths as Json).flatMap(([p, item]) =>
      Object.entries(item as Json)
        .filter(([m]) => METHODS.includes(m))
        .map(([m, op]) => ({ key: `${m.toUpperCase()} ${p}`, method: m, op: op as Json })),
    );

  test('every /v1 route of the app is in the document, and every operation is a route', () => {
    const served = routes.filter((r) => r.path.startsWith('/v1/')).map((r) => `${r.method} ${r.path}`).sort();
    assert.ok(served.length > 30, `found ${served.length} routes`);
    assert.deepEqual(operations().map((o) => o.key).sort(), served);
    // Who may call each operation is the route's guard, not a hand-kept list.
    for (const r of routes.filter((x) => x.path.startsWith('/v1/'))) {
      const op = (doc.paths as Json)[r.path][r.method.toLowerCase()] as Json;
      const want = !r.requirement ? [] : [r.requirement.kind === 'robot' ? { robotToken: [] } : { userToken: [] }];
      assert.deepEqual(op.security, want, `${r.method} ${r.path}`);
    }
  });

  test('the document is structurally OpenAPI 3.1', () => {
    const problems: string[] = [];
    const need = (ok: unknown, what: string) => void (ok || problems.push(what));
    need(typeof doc.openapi === 'string' && /^3\.1\.\d+$/.test(doc.openapi), 'openapi: 3.1.x');
    need(typeof doc.info?.title === 'string' && typeof doc.info?.version === 'string', 'info.title and info.version');
    need(doc['x-undescribed'] === undefined, `zod schemas not described: ${JSON.stringify(doc['x-undescribed'])}`);
    const schemes = Object.keys(doc.components?.securitySchemes ?? {});
    for (const [name, s] of Object.entries((doc.components?.securitySchemes ?? {}) as Json)) {
      need(s.type === 'http' && s.scheme === 'bearer', `securityScheme ${name}: http bearer`);
    }
    const tags = new Set((doc.tags as { name: string }[]).map((t) => t.name));
    const schemas = (doc.components?.schemas ?? {}) as Json;
    for (const [name, s] of Object.entries(schemas)) checkSchema(s, `#/components/schemas/${name}`, problems);
    // Every $ref anywhere points into the document.
    JSON.stringify(doc, (k, v) => {
      if (k === '$ref') need(typeof v === 'string' && v.startsWith('#/components/schemas/') && v.slice(21) in schemas, `$ref ${v} resolves`);
      return v;
    });
    const ids = new Set<string>();
    for (const [p, item] of Object.entries(doc.paths as Json)) {
      need(p.startsWith('/'), `path ${p} starts with /`);
      const templated = [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
      for (const [m, op] of Object.entries(item as Json)) {
        const at = `${m.toUpperCase()} ${p}`;
        need(METHODS.includes(m), `${at}: a method`);
        need(typeof op.operationId === 'string' && !ids.has(op.operationId), `${at}: a unique operationId`);
        ids.add(op.operationId);
        need(Array.isArray(op.tags) && op.tags.every((t: string) => tags.has(t)), `${at}: declared tags`);
        need(Array.isArray(op.security) && op.security.every((s: Json) => Object.keys(s).every((k) => schemes.includes(k))), `${at}: declared security schemes`);
        const params = (op.parameters ?? []) as Json[];
        for (const prm of params) {
          need(typeof prm.name === 'string' && ['query', 'path', 'header', 'cookie'].includes(prm.in) && prm.schema, `${at}: parameter ${prm.name} has name, in, schema`);
          need(prm.in !== 'path' || prm.required === true, `${at}: path parameter ${prm.name} required`);
          checkSchema(prm.schema, `${at} parameter ${prm.name}`, problems);
        }
        need(JSON.stringify(params.filter((x) => x.in === 'path').map((x) => x.name).sort()) === JSON.stringify(templated), `${at}: path parameters match the template`);
        if (op.requestBody) {
          need(Object.keys(op.requestBody.content ?? {}).length > 0, `${at}: requestBody has content`);
          for (const [t, media] of Object.entries(op.requestBody.content as Json)) checkSchema((media as Json).schema, `${at} body ${t}`, problems);
        }
        need(Object.keys(op.responses ?? {}).length > 0, `${at}: responses`);
        for (const [status, r] of Object.entries((op.responses ?? {}) as Json)) {
          need(/^[1-5]\d\d$/.test(status), `${at}: response key ${status}`);
          need(typeof r.description === 'string' && r.description.length > 0, `${at} ${status}: description`);
          for (const [t, media] of Object.entries((r.content ?? {}) as Json)) checkSchema((media as Json).schema, `${at} ${status} ${t}`, problems);
        }
      }
    }
    assert.deepEqual(problems, []);
  });

  test('every documented status happens, with a body of the documented schema', async () => {
    const resolve = (ref: string) => (doc.components.schemas as Json)[ref.replace('#/components/schemas/', '')];
    const problems: string[] = [];
    let checked = 0;
    for (const { key, method, op } of operations()) {
      const c = cases[key];
      if (!c) {
        problems.push(`${key}: no test cases`);
        continue;
      }
      const route = routes.find((r) => `${r.method} ${r.path}` === key);
      for (const s of Object.keys(c.statuses)) if (!(s in op.responses)) problems.push(`${key}: the test makes ${s}, which is not documented`);
      for (const [status, response] of Object.entries(op.responses as Json)) {
        const calls: [string, Call][] = [];
        const own = c.statuses[Number(status)];
        if (own) calls.push(['', own]);
        const anon = () => (request(ctx.app) as unknown as Record<string, (u: string) => request.Test>)[method]!(c.url);
        if (route?.requirement && status === '401') calls.push(['no token', anon]);
        const json = op.requestBody?.content?.['application/json'];
        if (json && status === '400' && !own) calls.push(['broken JSON', () => anon().set('content-type', 'application/json').send('{"name": ')]);
        if (json && status === '413' && !own) calls.push(['2 MiB body', () => anon().set('content-type', 'application/json').send(JSON.stringify({ name: 'x'.repeat(2 * 1024 * 1024) }))]);
        if (route?.requirement && status === '403') {
          calls.push(['wrong kind of token', () => anon().set(bearer(route.requirement!.kind === 'robot' ? tok.member : tok.robot))]);
          if (route.requirement.kind === 'admin') calls.push(['member', () => anon().set(bearer(tok.member))]);
        }
        if (calls.length === 0) problems.push(`${key} ${status}: documented, but no request makes it`);
        for (const [how, call] of calls) {
          const at = `${key} ${status}${how ? ` (${how})` : ''}`;
          const res = await call();
          checked++;
          if (String(res.status) !== status) {
            problems.push(`${at}: got ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
            continue;
          }
          const content = (response as Json).content as Json | undefined;
          if (!content) {
            if (res.text) problems.push(`${at}: documented without a body, got one`);
            continue;
          }
          for (const [h, spec] of Object.entries(((response as Json).headers ?? {}) as Json)) {
            // A header the server sends only sometimes is documented with `required: false`.
            if ((spec as Json).required !== false && res.headers[h.toLowerCase()] === undefined) problems.push(`${at}: documented header ${h} missing`);
          }
          const [mediaType, media] = Object.entries(content)[0] as [string, Json];
          if (!String(res.headers['content-type']).startsWith(mediaType)) problems.push(`${at}: content-type ${res.headers['content-type']}, documented ${mediaType}`);
          if (mediaType === 'application/json') problems.push(...validate(media.schema, res.body, resolve).map((e) => `${at}: ${e}`));
          else if (!Buffer.isBuffer(res.body) || res.body.length === 0) problems.push(`${at}: empty ${mediaType} body`);
        }
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(checked > 120, `checked ${checked} answers`);
  });
});
