import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import express from 'express';
import request from 'supertest';
import { decide, patternMatches, patternProblem, type Action, type Grant, type Subject } from '../server/acl/acl.js';
import { Guards } from '../server/acl/guard.js';
import type { Principal } from '../server/auth/principal.js';
import { createLogger } from '../server/logger.js';
import { errorHandler } from '../server/http/error-handler.js';
import { StoreUnavailable } from '../server/store/errors.js';

const admin: Subject = { name: 'root', role: 'admin' };
const acme: Subject = { name: 'acme', role: 'member' };
const other: Subject = { name: 'other', role: 'member' };

const g = (id: string, pattern: string, capabilities: Grant['capabilities'], extra: Partial<Grant> = {}): Grant => ({
  id,
  user: 'acme',
  keystore: 'X',
  pattern,
  capabilities,
  ...extra,
});

const env = { publish: ['rt/t/**'], subscribe: ['rt/t/cam/cmd'] };

type Row = [name: string, subject: Subject, grants: Grant[], action: Action, expected: 'allow' | 'deny', by?: string];

const rows: Row[] = [
  ['admin/anything → allow by admin', admin, [], { capability: 'manage', keystore: 'X', enclave: '/a' }, 'allow', 'admin'],
  ['member/no grants → deny', acme, [], { capability: 'read', keystore: 'X', enclave: '/a' }, 'deny'],
  ['member/exact match → allow', acme, [g('g1', '/a/b', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a/b' }, 'allow', 'g1'],
  ['member/exact does not match child', acme, [g('g1', '/a/b', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a/b/c' }, 'deny'],
  ['member/capability not granted → deny', acme, [g('g1', '/a/b', ['read'])], { capability: 'manage', keystore: 'X', enclave: '/a/b' }, 'deny'],
  ['member/* matches one level', acme, [g('g1', '/a/*', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a/b' }, 'allow', 'g1'],
  ['member/* does not match two levels', acme, [g('g1', '/a/*', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a/b/c' }, 'deny'],
  ['member/* does not match the parent itself', acme, [g('g1', '/a/*', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a' }, 'deny'],
  ['member/** matches any depth', acme, [g('g1', '/a/**', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a/b/c/d' }, 'allow', 'g1'],
  ['member/** does not match a sibling prefix /ab', acme, [g('g1', '/a/**', ['read'])], { capability: 'read', keystore: 'X', enclave: '/ab' }, 'deny'],
  ['member/** does not match the parent itself', acme, [g('g1', '/a/**', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a' }, 'deny'],
  ['member/grant on X gives nothing on Y', acme, [g('g1', '/**', ['read', 'manage', 'bind'])], { capability: 'read', keystore: 'Y', enclave: '/a' }, 'deny'],
  ['member/another user\'s grant gives nothing', other, [g('g1', '/**', ['read'])], { capability: 'read', keystore: 'X', enclave: '/a' }, 'deny'],
  ['member/second grant allows → names it', acme, [g('g1', '/a/*', ['read']), g('g2', '/b/**', ['manage'])], { capability: 'manage', keystore: 'X', enclave: '/b/c' }, 'allow', 'g2'],
  ['member/bind inside robot selector → allow', acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/cam', robots: [{ tenant: 'acme', site: 'tokyo' }] }, 'allow', 'g1'],
  ['member/bind outside robot selector → deny', acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/cam', robots: [{ tenant: 'other' }] }, 'deny'],
  ['member/bind with one robot outside → deny', acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/cam', robots: [{ tenant: 'acme' }, {}] }, 'deny'],
  ['member/bind selector narrower than grant → allow', acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/cam', selector: { tenant: 'acme', site: 'osaka' } }, 'allow', 'g1'],
  ['member/bind selector wider than grant → deny', acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/cam', selector: { site: 'osaka' } }, 'deny'],
  ['member/bind without selector on grant → any robot', acme, [g('g1', '/t/**', ['bind'])], { capability: 'bind', keystore: 'X', enclave: '/t/cam', robots: [{}] }, 'allow', 'g1'],
  ['member/read is not limited by robot selector', acme, [g('g1', '/t/**', ['read'], { robotSelector: { tenant: 'acme' } })], { capability: 'read', keystore: 'X', enclave: '/t/cam' }, 'allow', 'g1'],
  ['member/bind needs bind, not manage', acme, [g('g1', '/t/**', ['manage', 'read'])], { capability: 'bind', keystore: 'X', enclave: '/t/cam', robots: [{}] }, 'deny'],
  ['admin/admin-only capability → allow by admin', admin, [], { capability: 'keystore:create' }, 'allow', 'admin'],
  ['member/admin-only capability → deny whatever the grants', acme, [g('g1', '/**', ['read', 'manage', 'bind'])], { capability: 'user:manage' }, 'deny'],
  ['member/manage inside envelope → allow', acme, [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env })], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/t/cam/image', 'ros_discovery_info'], subscribe: [] } }, 'allow', 'g1'],
  ['member/manage outside envelope → deny', acme, [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env })], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/cmd_vel'], subscribe: [] } }, 'deny'],
  ['member/allow-all permissions outside any envelope', acme, [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env })], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/*'], subscribe: ['rt/*'] } }, 'deny'],
  ['member/subscribe is checked on its own', acme, [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env })], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: [], subscribe: ['rt/t/other'] } }, 'deny'],
  ['member/no envelope on the grant → unbounded', acme, [g('g1', '/t/**', ['manage'])], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/*'], subscribe: [] } }, 'allow', 'g1'],
  ['member/second grant\'s envelope covers it → names that grant', acme, [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env }), g('g2', '/t/cam', ['manage'], { permissionsEnvelope: { publish: ['rt/cmd_vel'], subscribe: [] } })], { capability: 'manage', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/cmd_vel'], subscribe: [] } }, 'allow', 'g2'],
  ['member/envelope does not bound read', acme, [g('g1', '/t/**', ['read'], { permissionsEnvelope: { publish: [], subscribe: [] } })], { capability: 'read', keystore: 'X', enclave: '/t/cam', permissions: { publish: ['rt/*'], subscribe: [] } }, 'allow', 'g1'],
];

describe('acl decide()', () => {
  for (const [name, subject, grants, action, expected, by] of rows) {
    test(name, () => {
      const d = decide(subject, grants, action);
      assert.equal(d.allowed, expected === 'allow');
      if (d.allowed) assert.equal(d.by === 'admin' ? 'admin' : d.grantId, by);
    });
  }
  test('a denial names the most specific reason', () => {
    const grants = [g('g1', '/t/**', ['manage'], { permissionsEnvelope: env }), g('g2', '/other/**', ['manage'])];
    assert.deepEqual(decide(acme, grants, { capability: 'manage', keystore: 'X', enclave: '/t/c', permissions: { publish: ['rt/x'], subscribe: [] } }), {
      allowed: false,
      reason: 'outside-permissions-envelope',
    });
    assert.deepEqual(decide(acme, grants, { capability: 'keystore:delete' }), { allowed: false, reason: 'admin-only' });
  });
  test('bind denied by selector says why', () => {
    const d = decide(acme, [g('g1', '/t/**', ['bind'], { robotSelector: { tenant: 'acme' } })], { capability: 'bind', keystore: 'X', enclave: '/t/c', robots: [{}] });
    assert.deepEqual(d, { allowed: false, reason: 'outside-robot-selector' });
  });
});

describe('patterns', () => {
  const valid = ['/a', '/a/b', '/a/*', '/a/**', '/**', '/*', '/_x/y1'];
  const invalid = ['a', '/a/**/b', '/a/*/b', '/a/', '/1a', '/a b', '', '/a/***'];
  for (const p of valid) test(`"${p}" is valid`, () => assert.equal(patternProblem(p), null));
  for (const p of invalid) test(`"${p}" is refused`, () => assert.notEqual(patternProblem(p), null));
  test('/** matches every enclave but not "/"', () => {
    assert.equal(patternMatches('/**', '/a/b'), true);
    assert.equal(patternMatches('/**', '/'), false);
  });
});

describe('guards', () => {
  /** One guarded route behind a stand-in for authentication that signs the request in as `principal`. */
  const appWith = (grantsOf: (user: string) => Promise<readonly Grant[]>, principal: Principal) => {
    const guards = new Guards(grantsOf);
    const app = express();
    app.use((req, _res, next) => {
      req.principal = principal;
      next();
    });
    app.get('/x/:keystore/*', guards.enclave('read', (req) => ({ keystore: req.params.keystore!, enclaves: [`/${req.params[0]}`] })), (_req, res) => {
      res.json({ ok: true });
    });
    app.use(errorHandler(createLogger('silent')));
    return app;
  };
  const member: Principal = { kind: 'user', name: 'acme', role: 'member' };

  test('a member is decided on the grants read for them', async () => {
    const app = appWith(async (user) => (user === 'acme' ? [g('g1', '/a/**', ['read'])] : []), member);
    assert.equal((await request(app).get('/x/X/a/b')).status, 200);
    assert.equal((await request(app).get('/x/X/b/c')).status, 404);
  });

  test('grants that cannot be read answer 503, not a refusal and not a crash', async () => {
    const app = appWith(() => Promise.reject(new StoreUnavailable('database unavailable')), member);
    const res = await request(app).get('/x/X/a/b');
    assert.equal(res.status, 503);
    assert.equal(res.body.error.code, 'database-unavailable');
  });

  test('an admin needs no grants read', async () => {
    const app = appWith(() => Promise.reject(new Error('not asked for an admin')), { kind: 'user', name: 'root', role: 'admin' });
    assert.equal((await request(app).get('/x/X/b/c')).status, 200);
  });
});
