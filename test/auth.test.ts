import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import jwt from 'jsonwebtoken';
import request from 'supertest';
import { DEFAULT_LOGIN_THROTTLE } from '../server/auth/throttle.js';
import { userTokenVersion } from '../server/auth/tokens.js';
import { ADMIN, bearer, makeTestApp, type TestContext } from './helpers/app.js';
import { assertion, deviceKey } from './helpers/robot.js';

describe('login and bearer tokens', () => {
  let ctx: TestContext;
  // The throttle's waits are measured on this clock, frozen: a slow machine must not let a wait run out.
  const frozen = Date.now();
  let t = frozen;
  // The administrator's token version, read once: no test here changes the administrator.
  let adminVersion: string;
  before(async () => {
    ctx = await makeTestApp({ now: () => new Date(t), loginThrottle: { ...DEFAULT_LOGIN_THROTTLE, freeFailures: 3, perAddressBurst: 1000 } });
    adminVersion = userTokenVersion((await ctx.store.read((r) => r.users.get('admin')))!);
  });
  after(() => ctx.close());

  const forge = (claims: object, secret: Buffer | string, options: jwt.SignOptions = {}) =>
    jwt.sign(claims, secret, { algorithm: 'HS256', ...options });
  const adminVer = () => adminVersion;

  test('control: a token made with the server secret and every right claim is accepted', async () => {
    const t = forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 });
    ctx.secrets.add(t);
    assert.equal((await request(ctx.app).get('/v1/users').set(bearer(t))).status, 200);
  });

  test('a deleted user created again does not get the old tokens back', async () => {
    const admin = await ctx.adminToken();
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'phoenix', password: 'phoenix-password-1', role: 'admin' }).expect(201);
    const old = await ctx.login('phoenix', 'phoenix-password-1');
    await request(ctx.app).delete('/v1/users/phoenix').set(bearer(admin)).expect(204);
    t += 1000;
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'phoenix', password: 'phoenix-password-1', role: 'member' }).expect(201);
    assert.equal((await request(ctx.app).get('/v1/audit').set(bearer(old))).status, 401);
  });

  test('login succeeds with the right password and the token works', async () => {
    const res = await request(ctx.app).post('/v1/auth/login').send(ADMIN);
    assert.equal(res.status, 200);
    assert.match(res.body.token, /^eyJ/);
    ctx.secrets.add(res.body.token);
    const exp = Date.parse(res.body.expiresAt) - t;
    assert.ok(exp > 15 * 60_000 - 1000 && exp <= 15 * 60_000, 'default lifetime is 15 minutes');
    const me = await request(ctx.app).get('/v1/users').set(bearer(res.body.token));
    assert.equal(me.status, 200);
    const claims = jwt.decode(res.body.token, { complete: true })!;
    assert.equal(claims.header.alg, 'HS256');
    assert.equal((claims.payload as jwt.JwtPayload).iss, 'enclave-server');
  });

  test('wrong password and unknown user get the same 401', async () => {
    const wrong = await request(ctx.app).post('/v1/auth/login').send({ username: 'admin', password: 'not-the-password' });
    const unknown = await request(ctx.app).post('/v1/auth/login').send({ username: 'nobody', password: 'not-the-password' });
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    assert.deepEqual(wrong.body, unknown.body);
    assert.equal(wrong.body.error.code, 'invalid-credentials');
  });

  test('repeated failures of one user from one address are slowed down with 429 and Retry-After', async () => {
    const user = { username: 'victim', password: 'guess-guess-guess' };
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await request(ctx.app).post('/v1/auth/login').send(user)).status);
    assert.deepEqual(statuses, [401, 401, 401, 429, 429]);
    const res = await request(ctx.app).post('/v1/auth/login').send(user);
    assert.equal(res.body.error.code, 'too-many-requests');
    assert.ok(Number(res.headers['retry-after']) > 0);
  });

  test('guesses sent all at once cannot pass the limit', async () => {
    const burst = await makeTestApp({ now: () => new Date(frozen), loginThrottle: { ...DEFAULT_LOGIN_THROTTLE, freeFailures: 5 } });
    try {
      const results = await Promise.all(
        Array.from({ length: 30 }, () => request(burst.app).post('/v1/auth/login').send({ username: 'admin', password: 'wrong-wrong-wrong' })),
      );
      const evaluated = results.filter((r) => r.status === 401).length;
      assert.equal(evaluated, 5, `${evaluated} guesses were checked`);
      assert.equal(results.filter((r) => r.status === 429).length, 25);
    } finally {
      await burst.close();
    }
  });

  test('an unknown user name is not written to the audit log as typed', async () => {
    await request(ctx.app).post('/v1/auth/login').send({ username: 'Sup3r-Secret-Pasted', password: 'whatever-whatever' });
    const admin = await ctx.adminToken();
    const res = await request(ctx.app).get('/v1/audit?action=auth.login&limit=100').set(bearer(admin));
    assert.ok(!JSON.stringify(res.body).includes('Sup3r-Secret-Pasted'));
  });

  test('one flooding address is held to a rate of attempts across user names, not locked out', async () => {
    let t = Date.now();
    const limited = await makeTestApp({ now: () => new Date(t), loginThrottle: { ...DEFAULT_LOGIN_THROTTLE, freeFailures: 100, perAddressBurst: 4, perAddressRate: 2 } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        statuses.push((await request(limited.app).post('/v1/auth/login').send({ username: `u${i}`, password: 'nope-nope-nope' })).status);
      }
      assert.deepEqual(statuses, [401, 401, 401, 401, 429, 429]);
      const wait = await request(limited.app).post('/v1/auth/login').send(ADMIN);
      assert.equal(wait.status, 429);
      assert.equal(wait.headers['retry-after'], '1', 'a person sharing the address waits a moment, not minutes');
      t += 1000;
      assert.equal((await request(limited.app).post('/v1/auth/login').send(ADMIN)).status, 200);
    } finally {
      await limited.close();
    }
  });

  const badTokens: [string, () => string][] = [
    ['expired', () => forge({ ver: adminVer(), exp: Math.floor(Date.now() / 1000) - 60 }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin' })],
    ['tampered signature', () => {
      const t = forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 });
      return t.slice(0, -4) + (t.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    }],
    ['tampered payload (role claim added)', () => {
      const t = forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 });
      const [h, , s] = t.split('.');
      const p = Buffer.from(JSON.stringify({ sub: 'someone-else', ver: adminVer(), aud: 'enclave-server:user', iss: 'enclave-server', exp: 9999999999 })).toString('base64url');
      return `${h}.${p}.${s}`;
    }],
    ['wrong audience', () => forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'something-else', subject: 'admin', expiresIn: 60 })],
    ['wrong issuer', () => forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'evil', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 })],
    ['signed with another secret', () => forge({ ver: adminVer() }, 'another-secret-entirely', { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 })],
    ['alg none', () => {
      const h = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
      const p = Buffer.from(JSON.stringify({ sub: 'admin', ver: adminVer(), aud: 'enclave-server:user', iss: 'enclave-server', exp: Math.floor(Date.now() / 1000) + 60 })).toString('base64url');
      return `${h}.${p}.`;
    }],
    ['without exp (never expires)', () => forge({ ver: adminVer(), iat: Math.floor(Date.now() / 1000) }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin' })],
    ['without iat', () => forge({ ver: adminVer(), exp: Math.floor(Date.now() / 1000) + 60 }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', noTimestamp: true })],
    ['a lifetime longer than the server gives', () => forge({ ver: adminVer() }, ctx.jwtSecret, { issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 900 + 60 })],
    ['HS512 instead of the pinned HS256', () => jwt.sign({ ver: adminVer() }, ctx.jwtSecret, { algorithm: 'HS512', issuer: 'enclave-server', audience: 'enclave-server:user', subject: 'admin', expiresIn: 60 })],
    ['garbage', () => 'not-a-jwt'],
  ];
  for (const [name, make] of badTokens) {
    test(`${name} token → 401 invalid-token`, async () => {
      const res = await request(ctx.app).get('/v1/users').set(bearer(make()));
      assert.equal(res.status, 401);
      assert.equal(res.body.error.code, 'invalid-token');
    });
  }

  test('no token → 401 on a protected route', async () => {
    const res = await request(ctx.app).get('/v1/users');
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, 'unauthorized');
  });

  test('a valid token of a deleted user stops working at once', async () => {
    const admin = await ctx.adminToken();
    await request(ctx.app).post('/v1/users').set(bearer(admin)).send({ name: 'temp', password: 'temp-password-123', role: 'member' }).expect(201);
    const t = await ctx.login('temp', 'temp-password-123');
    await request(ctx.app).delete('/v1/users/temp').set(bearer(admin)).expect(204);
    assert.equal((await request(ctx.app).get('/v1/audit').set(bearer(t))).status, 401);
  });

  test('logins (success and failure) are audited without the password', async () => {
    const admin = await ctx.adminToken();
    const res = await request(ctx.app).get('/v1/audit?action=auth.login&limit=50').set(bearer(admin));
    assert.equal(res.status, 200);
    const results = new Set(res.body.entries.map((e: { result: string }) => e.result));
    assert.ok(results.has('success') && results.has('failure'));
    assert.ok(!JSON.stringify(res.body).includes(ADMIN.password));
  });
});

/**
 * A robot's login is answered before express (`robotLoginFrontLane`), which is where express works out
 * `req.ip`: the lane must read the client address as `--trust-proxy` says, or throttles and the audit log
 * would see the proxy (or trust a header nobody vouched for).
 */
describe('the client address of a robot login', () => {
  for (const trustProxy of [['loopback'], false] as const) {
    test(`trust proxy ${JSON.stringify(trustProxy)}: the audit log has ${trustProxy ? 'the forwarded address' : 'the socket address'}, on the front lane and the general stack`, async () => {
      const ctx = await makeTestApp({ trustProxy: trustProxy === false ? false : [...trustProxy] });
      try {
        const admin = await ctx.adminToken();
        await request(ctx.app).post('/v1/robots').set(bearer(admin)).send({ name: 'r1', labels: {} }).expect(201);
        const t = await request(ctx.app).post('/v1/robots/r1/enrollment-tokens').set(bearer(admin)).send({});
        ctx.secrets.add(t.body.token);
        const key = deviceKey();
        await request(ctx.app).post('/v1/enroll').send({ token: t.body.token, publicKey: key.publicKeyPem }).expect(201);
        // A query string sends the login down the general stack, where express's own req.ip reads the address.
        for (const [path, forwarded] of [['/v1/auth/robot', '203.0.113.7'], ['/v1/auth/robot?via=general', '203.0.113.8']] as const) {
          const res = await request(ctx.app).post(path).set('X-Forwarded-For', forwarded).send({ assertion: assertion('r1', key) }).expect(200);
          ctx.secrets.add(res.body.token);
          const row = await ctx.store.read((r) => r.sql.get<{ details: string }>("SELECT details FROM audit_log WHERE action = 'auth.robot' ORDER BY id DESC LIMIT 1"));
          const ip = (JSON.parse(row!.details) as { ip: string }).ip;
          if (trustProxy) assert.equal(ip, forwarded, path);
          else assert.match(ip, /^(::ffff:)?127\.0\.0\.1$|^::1$/, path);
        }
      } finally {
        ctx.services.bundles.close();
        await ctx.close();
      }
    });
  }
});

/**
 * A security review: five wrong passwords from one address made the right password fail from every address
 * for 15 minutes. Failures are now keyed on (user, address) and slow that pair down instead.
 */
describe('login throttling cannot lock a user out', () => {
  let t = Date.now();
  let ctx: TestContext;
  before(async () => {
    ctx = await makeTestApp({ now: () => new Date(t), trustProxy: ['loopback'] });
  });
  after(() => ctx.close());
  const from = (ip: string, password: string) =>
    request(ctx.app).post('/v1/auth/login').set('X-Forwarded-For', ip).send({ username: ADMIN.username, password });

  test('failures from one address do not block the right password from another', async () => {
    for (let i = 0; i < 8; i++) await from('203.0.113.66', 'wrong-wrong-wrong');
    assert.equal((await from('203.0.113.66', ADMIN.password)).status, 429, 'the guessing address is slowed down');
    const elsewhere = await from('198.51.100.7', ADMIN.password);
    assert.equal(elsewhere.status, 200, `the administrator elsewhere: ${JSON.stringify(elsewhere.body)}`);
    ctx.secrets.add(elsewhere.body.token);
  });

  test('the wait grows with each failure, and the right password is taken once it is over', async () => {
    const ip = '192.0.2.10';
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) assert.equal((await from(ip, 'wrong-wrong-wrong')).status, 401);
    for (let i = 0; i < 4; i++) {
      const early = await from(ip, ADMIN.password);
      assert.equal(early.status, 429);
      const wait = Number(early.headers['retry-after']);
      waits.push(wait);
      t += wait * 1000;
      assert.equal((await from(ip, 'wrong-wrong-wrong')).status, 401);
    }
    assert.deepEqual(waits, [1, 2, 4, 8]);
    const capped = Number((await from(ip, ADMIN.password)).headers['retry-after']);
    t += capped * 1000;
    const ok = await from(ip, ADMIN.password);
    assert.equal(ok.status, 200);
    ctx.secrets.add(ok.body.token);
    assert.equal((await from(ip, 'wrong-wrong-wrong')).status, 401, 'a success starts the pair over');
  });

  test('the wait never exceeds a minute', async () => {
    const ip = '192.0.2.11';
    for (let i = 0; i < 5; i++) await from(ip, 'wrong-wrong-wrong');
    for (let i = 0; i < 12; i++) {
      const r = await from(ip, 'wrong-wrong-wrong');
      if (r.status === 429) t += Number(r.headers['retry-after']) * 1000;
    }
    const r = await from(ip, ADMIN.password);
    assert.equal(r.status, 429);
    assert.ok(Number(r.headers['retry-after']) <= 60, `waited ${r.headers['retry-after']} s`);
  });
});
