/**
 * The web console (/ui/) in a real browser: Debian's Chromium driven by playwright-core against the real
 * `enclave-server` process over HTTPS, with robots enrolled by real device-key assertions that fetch real
 * bundles and report. Plus the console's server side without a browser (static headers, GET /v1/fleet).
 *
 * Chromium must start: when it cannot, these tests fail with the reason (they are never skipped).
 * `UPDATE_SCREENSHOTS=1` also saves docs/images/console-fleet.png and console-expiry.png.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { buildUi, type UiBuild } from '../scripts/build-ui.js';
import { CONSOLE_CSP } from '../server/console/console.routes.js';
import { API_HEADERS } from '../server/http/lean.js';
import { Admin, ADMIN_PASSWORD, startServer, type RealServer } from './helpers/agent-server.js';
import { bearer, makeTestApp } from './helpers/app.js';
import { assertion, deviceKey, type DeviceKey } from './helpers/robot.js';
import { pinnedRequest } from './helpers/server-process.js';
import { REPO } from './helpers/tools.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const AXE = path.join(REPO, 'node_modules/axe-core/axe.min.js');
const SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1' ? path.join(REPO, 'docs/images') : undefined;
const MEMBER = { name: 'acme', password: 'acme-developer-password' };

let build: UiBuild;
before(async () => {
  // Always from the source in this checkout: a fresh clone has no dist/ui, and an old one may be stale.
  build = await buildUi();
  const sizes = build.files.map((f) => `${f.name} ${f.gzipBytes} B`).join(', ');
  console.log(`console bundle: ${build.gzipBytes} bytes gzipped (${sizes})`);
});

describe('console: server side (no browser)', () => {
  test('/ui/ is served with a strict CSP, the page is revalidated, hashed assets are immutable', async () => {
    const ctx = await makeTestApp({ uiDir: build.outDir });
    try {
      const app = request(ctx.app);
      await app.get('/ui').expect(301).expect('Location', '/ui/');
      const page = await app.get('/ui/').expect(200).expect('Content-Type', /text\/html/);
      assert.equal(page.headers['content-security-policy'], CONSOLE_CSP);
      assert.match(CONSOLE_CSP, /default-src 'self'/);
      assert.match(CONSOLE_CSP, /frame-ancestors 'none'/);
      assert.doesNotMatch(CONSOLE_CSP, /unsafe-inline|unsafe-eval|https?:/);
      assert.equal(page.headers['cache-control'], 'no-cache');
      // No inline script or style in the page: the CSP would refuse them.
      assert.doesNotMatch(page.text, /<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=/);
      const assets = [...page.text.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)].map((m) => m[1]!);
      assert.equal(assets.length, 2, page.text);
      for (const a of assets) {
        const res = await app.get(`/ui/${a}`).expect(200);
        assert.match(String(res.headers['cache-control']), /max-age=31536000.*immutable|immutable.*max-age=31536000/);
        assert.equal(res.headers['content-security-policy'], CONSOLE_CSP);
      }
      await app.get('/ui/assets/app-NOSUCH.js').expect(404);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });

  test("console pages carry helmet's headers; API answers, probes and refusals the API's set, and none of a page's", async () => {
    const ctx = await makeTestApp({ uiDir: build.outDir });
    try {
      const app = request(ctx.app);
      const page = await app.get('/ui/').expect(200);
      assert.equal(page.headers['x-frame-options'], 'SAMEORIGIN');
      assert.equal(page.headers['cross-origin-opener-policy'], 'same-origin');
      assert.equal(page.headers['referrer-policy'], 'no-referrer');
      const pageOnly = ['cross-origin-opener-policy', 'origin-agent-cluster', 'referrer-policy', 'x-dns-prefetch-control', 'x-download-options', 'x-permitted-cross-domain-policies', 'x-xss-protection'];
      const paths = ['/health', '/v1/keystores', '/v1/no-such-route', '/v1/auth/login'];
      const answers = [...(await Promise.all(paths.slice(0, 3).map((p) => app.get(p)))), await app.post(paths[3]!).send({ username: 'x' })];
      assert.deepEqual(answers.map((r) => r.status), [200, 401, 404, 422]);
      answers.forEach((res, i) => {
        for (const [k, v] of API_HEADERS) assert.equal(res.headers[k.toLowerCase()], v, `${paths[i]}: ${k}`);
        assert.deepEqual(pageOnly.filter((k) => k in res.headers), [], paths[i]);
      });
      assert.match(String(answers[0]!.headers['content-security-policy']), /default-src 'none'; frame-ancestors 'none'/);
      assert.match(String(answers[0]!.headers['strict-transport-security']), /max-age=\d+/);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });

  test('without a build, /ui/ says how to make one (503), and the API is unaffected', async () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-ui-none-'));
    const ctx = await makeTestApp({ uiDir: empty });
    try {
      const res = await request(ctx.app).get('/ui/').expect(503);
      assert.match(res.text, /npm run build/);
      await request(ctx.app).get('/health').expect(200);
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  test('GET /v1/fleet: states from the clock and revisions, and a member sees only robots their selectors reach', async () => {
    let t = Date.now();
    const ctx = await makeTestApp({ now: () => new Date(t) });
    try {
      const app = () => request(ctx.app);
      const A = bearer(await ctx.adminToken());
      await app().post('/v1/keystores').set(A).send({ name: 'ks' }).expect(201);
      await app().post('/v1/keystores/ks/enclaves').set(A).send({ path: '/a/one' }).expect(201);
      for (const [name, labels] of [['r1', { tenant: 'acme' }], ['r2', { site: 'x' }], ['r3', { tenant: 'acme' }]] as const) {
        await app().post('/v1/robots').set(A).send({ name, labels }).expect(201);
      }
      const key = deviceKey();
      const tok = await app().post('/v1/robots/r1/enrollment-tokens').set(A).send({}).expect(201);
      await app().post('/v1/enroll').send({ token: tok.body.token, publicKey: key.publicKeyPem }).expect(201);
      const robotToken = (await app().post('/v1/auth/robot').send({ assertion: assertion('r1', key) }).expect(200)).body.token as string;
      await app().post('/v1/bindings').set(A).send({ keystore: 'ks', enclave: '/a/one', robot: 'r1' }).expect(201);

      const fleet = async (q = '') => (await app().get(`/v1/fleet${q}`).set(A).expect(200)).body as { robots: { name: string; state: string; heldRevision: string | null; currentRevision: string | null }[]; counts: Record<string, number> };
      const r1 = async (q = '') => (await fleet(q)).robots.find((r) => r.name === 'r1')!;
      assert.equal((await r1()).state, 'never-reported');
      assert.equal((await fleet()).robots.find((r) => r.name === 'r2')!.state, 'not-enrolled');

      const bundle = (await app().get('/v1/robot/bundle').set(bearer(robotToken)).expect(200)).body as { revision: string };
      await app().post('/v1/robot/report').set(bearer(robotToken)).send({ revision: bundle.revision, filesystem: 'tmpfs', clockSkewMs: 0, agentVersion: '0.1.0', enclaves: [] }).expect(204);
      assert.deepEqual(await r1(), { ...(await r1()), state: 'up-to-date', heldRevision: bundle.revision, currentRevision: bundle.revision });

      await app().post('/v1/keystores/ks/enclaves/a/one/rotate').set(A).send({}).expect(200);
      const behind = await r1();
      assert.equal(behind.state, 'behind');
      assert.notEqual(behind.currentRevision, bundle.revision);

      t += 2 * 60_000; // two minutes without a word from the agent
      assert.equal((await r1('?silentMinutes=10')).state, 'behind');
      assert.equal((await r1('?silentMinutes=1')).state, 'silent');
      assert.equal((await fleet('?silentMinutes=1')).counts.silent, 1);

      await app().post('/v1/users').set(A).send({ name: MEMBER.name, password: MEMBER.password }).expect(201);
      await app().post('/v1/grants').set(A).send({ user: MEMBER.name, keystore: 'ks', pattern: '/a/**', capabilities: ['read', 'bind'], robotSelector: { tenant: 'acme' } }).expect(201);
      const member = await ctx.login(MEMBER.name, MEMBER.password);
      const seen = (await app().get('/v1/fleet').set(bearer(member)).expect(200)).body as { robots: { name: string }[]; counts: Record<string, number> };
      assert.deepEqual(seen.robots.map((r) => r.name), ['r1', 'r3']);
      assert.equal(Object.values(seen.counts).reduce((a, b) => a + b, 0), 2, 'counts cover only what the member sees');
      const who = (await app().get('/v1/session').set(bearer(member)).expect(200)).body;
      assert.deepEqual(who, { name: MEMBER.name, role: 'member', grants: [{ keystore: 'ks', pattern: '/a/**', capabilities: ['read', 'bind'] }] });
    } finally {
      ctx.services.bundles.close();
      await ctx.close();
    }
  });
});

/** A robot on the real server: enrolled with its own device key, signed in with a real assertion. */
class TestRobot {
  token = '';
  constructor(
    readonly name: string,
    private readonly server: RealServer,
    private readonly ca: string,
    private readonly key: DeviceKey = deviceKey(),
  ) {}

  async enroll(admin: Admin): Promise<void> {
    const res = await pinnedRequest(`${this.server.url}/v1/enroll`, this.ca, { method: 'POST', body: { token: await admin.enrollmentToken(this.name), publicKey: this.key.publicKeyPem } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const login = await pinnedRequest(`${this.server.url}/v1/auth/robot`, this.ca, { method: 'POST', body: { assertion: assertion(this.name, this.key) } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    this.token = login.body.token as string;
  }

  /** What the agent does: fetch the bundle, then report the revision and enclaves it now holds. */
  async fetchAndReport(): Promise<{ revision: string; enclaves: string[] }> {
    const res = await pinnedRequest(`${this.server.url}/v1/robot/bundle`, this.ca, { token: this.token });
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 200));
    const b = res.body as { revision: string; keystores: { name: string; enclaves: { path: string; notAfter: string }[] }[] };
    const held = b.keystores.flatMap((k) => k.enclaves.map((e) => ({ keystore: k.name, path: e.path, notAfter: e.notAfter })));
    const rep = await pinnedRequest(`${this.server.url}/v1/robot/report`, this.ca, {
      method: 'POST',
      token: this.token,
      body: { revision: b.revision, filesystem: 'tmpfs', clockSkewMs: -46, agentVersion: '0.1.0', enclaves: held },
    });
    assert.equal(rep.status, 204, JSON.stringify(rep.body));
    return { revision: b.revision, enclaves: held.map((e) => `${e.keystore}:${e.path}`) };
  }
}

describe('console in Chromium (real server, real robots)', () => {
  let dataDir: string;
  let server: RealServer;
  let admin: Admin;
  let ca: string;
  let browser: Browser;
  let amr: TestRobot;
  const contexts: BrowserContext[] = [];
  /** Per page: console errors, page errors and CSP violations, each of which fails the test. */
  const problems = new Map<Page, string[]>();

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-console-'));
    server = await startServer({ dataDir });
    ca = fs.readFileSync(server.caFile!, 'utf8');
    admin = await Admin.login(server);
    // The server's self-signed certificate is accepted by its public key only (not "any certificate").
    const serverCert = new crypto.X509Certificate(fs.readFileSync(path.join(dataDir, 'tls/server.cert.pem')));
    const spki = crypto.createHash('sha256').update(serverCert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    try {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${spki}`] });
    } catch (e) {
      throw new Error(`Chromium could not start (${CHROMIUM}; on Debian: apt-get install chromium): ${(e as Error).message.split('\n')[0]}`);
    }

    await admin.createKeystore('fleet');
    for (const p of ['/fleet/amr/driver', '/fleet/amr/planner', '/thirdparty/acme/camera', '/thirdparty/other/lidar']) await admin.createEnclave('fleet', p);
    await admin.createRobot('amr-1', { site: 'lab' });
    await admin.createRobot('acme-bot', { tenant: 'acme' });
    await admin.createRobot('spare', { site: 'lab' });
    await admin.bind('fleet', '/fleet/amr/driver', 'amr-1');
    await admin.bind('fleet', '/fleet/amr/planner', 'amr-1');
    await admin.bind('fleet', '/thirdparty/acme/camera', 'acme-bot');
    await admin.call('POST', '/v1/users', { name: MEMBER.name, password: MEMBER.password });
    await admin.call('POST', '/v1/grants', { user: MEMBER.name, keystore: 'fleet', pattern: '/thirdparty/acme/**', capabilities: ['read', 'bind'], robotSelector: { tenant: 'acme' } });
    amr = new TestRobot('amr-1', server, ca);
    await amr.enroll(admin);
    const acme = new TestRobot('acme-bot', server, ca);
    await acme.enroll(admin);
    await acme.fetchAndReport();
  });

  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close().catch(() => {});
    admin?.close();
    await server?.stop();
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /**
   * A fresh tab (own context: no shared state) that records every console error and CSP violation.
   * `fakeClock`: the page's timers and Date are Playwright's, moved on by the test (no waiting on real time).
   */
  async function openConsole(fakeClock = false): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
    contexts.push(context);
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
    const seen: string[] = [];
    problems.set(page, seen);
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') seen.push(`console.${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => seen.push(`page error: ${e.message}`));
    // Evaluated by the browser itself (not a page script), so the CSP does not apply to this listener.
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
    });
    if (fakeClock) await page.clock.install();
    page.on('request', (r) => {
      if (!r.url().startsWith(server.url)) seen.push(`request to another origin: ${r.url()}`);
    });
    await page.goto(`${server.url}/ui/`);
    return page;
  }

  /** Fails on anything recorded, except `expected` (each must have happened). */
  function assertClean(page: Page, expected: RegExp[] = []): void {
    const seen = problems.get(page)!;
    for (const re of expected) {
      const i = seen.findIndex((s) => re.test(s));
      assert.ok(i >= 0, `expected a console message matching ${re}; got ${JSON.stringify(seen)}`);
      seen.splice(i, 1);
    }
    assert.deepEqual(seen, [], 'console errors, CSP violations or foreign requests');
  }

  /** axe-core on the page as it is: no serious or critical violation. */
  async function assertAccessible(page: Page, what: string): Promise<void> {
    // Evaluated through the DevTools protocol: a <script> tag (addScriptTag) would be refused by the console's
    // own CSP, which is exactly what it should do with an inline script.
    if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(fs.readFileSync(AXE, 'utf8'));
    const result = (await page.evaluate(async () => {
      const axe = (window as unknown as { axe: { run: (ctx: Document, opts: object) => Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe;
      return axe.run(document, { resultTypes: ['violations'] });
    })) as { violations: { id: string; impact: string; nodes: { target: string[] }[] }[] };
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    assert.deepEqual(bad.map((v) => `${v.impact} ${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`), [], `accessibility of ${what}`);
  }

  async function signIn(page: Page, user: string, password: string): Promise<void> {
    await page.getByLabel('User name').fill(user);
    await page.getByLabel('Password').fill(password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
  }

  const fleetRow = (page: Page, robot: string) => page.locator(`#fleet tr[data-key="${robot}"]`);
  async function robotState(page: Page, robot: string, want: string): Promise<void> {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator(`#fleet tr[data-key="${robot}"] td[data-col="state"]`, { hasText: new RegExp(`^${want}$`) }).waitFor();
  }

  /** Waits until the audit table's rows (as text) satisfy `ok`: the answer to the filters just applied. */
  async function auditRows(page: Page, ok: (rows: string[]) => boolean): Promise<void> {
    const deadline = Date.now() + 15_000;
    let rows: string[] = [];
    while (Date.now() < deadline) {
      rows = await page.locator('#audit tbody tr').allInnerTexts();
      if (ok(rows)) return;
      await page.waitForTimeout(50);
    }
    assert.fail(`audit rows never matched: ${JSON.stringify(rows).slice(0, 500)}`);
  }

  let adminPage: Page;
  let memberPage: Page;
  const nav = (page: Page, name: string) => page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name, exact: true });

  test('admin: a robot is behind after a rotation made in the console, up to date once its agent fetched and reported', async () => {
    const page = (adminPage = await openConsole());
    await assertAccessible(page, 'the sign-in form');
    await signIn(page, 'admin', ADMIN_PASSWORD);
    await fleetRow(page, 'amr-1').waitFor();
    assert.match(await fleetRow(page, 'amr-1').innerText(), /never reported/);
    assert.match(await fleetRow(page, 'spare').innerText(), /not enrolled/);

    const first = await amr.fetchAndReport();
    assert.deepEqual(first.enclaves.sort(), ['fleet:/fleet/amr/driver', 'fleet:/fleet/amr/planner']);
    await robotState(page, 'amr-1', 'up to date');
    const row = await fleetRow(page, 'amr-1').innerText();
    assert.match(row, /site=lab/);
    assert.match(row, /0\.1\.0/);
    assert.match(row, /-46 ms/);
    assert.match(row, /tmpfs/);

    // Rotate in the console: keystores → fleet → the enclave's page → Rotate.
    await nav(page, 'Keystores').click();
    await page.getByRole('link', { name: 'fleet', exact: true }).click();
    await page.locator('#enclave-tree').getByRole('link', { name: 'driver' }).click();
    await page.getByRole('heading', { name: /Enclave \/fleet\/amr\/driver/ }).waitFor();
    const serialBefore = await page.locator('.facts dd.mono').first().innerText();
    await page.getByRole('button', { name: 'Rotate' }).click();
    await page.getByText(/Rotated fleet:\/fleet\/amr\/driver: new serial/).waitFor();
    await page.waitForFunction((before) => document.querySelector('.facts dd.mono')?.textContent !== before, serialBefore);
    await assertAccessible(page, 'an enclave page');

    await nav(page, 'Fleet').click();
    await robotState(page, 'amr-1', 'behind');
    const second = await amr.fetchAndReport();
    assert.notEqual(second.revision, first.revision);
    await robotState(page, 'amr-1', 'up to date');
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, 'console-fleet.png') });
    await assertAccessible(page, 'the fleet page');

    // The robot's page: held enclaves with expiries, bindings, and the revision it holds.
    await fleetRow(page, 'amr-1').getByRole('link', { name: 'amr-1' }).click();
    await page.getByRole('heading', { name: 'Robot amr-1' }).waitFor();
    assert.match(await page.locator('#held').innerText(), /\/fleet\/amr\/driver[\s\S]*\/fleet\/amr\/planner|\/fleet\/amr\/planner[\s\S]*\/fleet\/amr\/driver/);
    assert.match(await page.locator('.facts').innerText(), new RegExp(`held ${second.revision}, current ${second.revision}`));
    assert.equal(await page.locator('#robot-bindings tbody tr').count(), 2);
    await assertAccessible(page, 'a robot page');
    assertClean(page);
  });

  test('admin: an enrollment token with a copyable command; revoking a key and deleting a robot ask first', async () => {
    const page = adminPage;
    await page.goto(`${server.url}/ui/#/robots/spare`);
    await page.getByRole('heading', { name: 'Robot spare' }).waitFor();
    await page.getByRole('button', { name: 'Make enrollment token' }).click();
    const command = await page.getByLabel(/Run on the robot/).inputValue();
    const m = /^enclave-agent enroll --server (\S+) --ca ca\.cert\.pem --token (\S+)$/.exec(command);
    assert.ok(m, command);
    assert.equal(m[1], server.url);
    // The token in the command works: a robot enrolls with it.
    const key = deviceKey('ed25519');
    const enrolled = await pinnedRequest(`${server.url}/v1/enroll`, ca, { method: 'POST', body: { token: m[2], publicKey: key.publicKeyPem } });
    assert.equal(enrolled.status, 201, JSON.stringify(enrolled.body));

    await page.getByRole('button', { name: 'Copy command' }).click();
    await page.getByText(/Command copied|copy it with Ctrl\+C/).waitFor();

    page.once('dialog', (d) => void d.dismiss());
    await page.getByRole('button', { name: 'Delete robot' }).click();
    assert.equal((await admin.getRobot('spare')).name, 'spare', 'dismissed: nothing deleted');

    await page.reload();
    await signIn(page, 'admin', ADMIN_PASSWORD);
    await page.getByRole('heading', { name: 'Robot spare' }).waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Revoke device key' }).click();
    await page.getByText('The device key of spare is revoked.').waitFor();
    assert.equal((await admin.getRobot<{ enrolled: boolean }>('spare')).enrolled, false);

    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Delete robot' }).click();
    await page.getByRole('heading', { name: 'Fleet' }).waitFor();
    await fleetRow(page, 'amr-1').waitFor();
    assert.equal(await fleetRow(page, 'spare').count(), 0);
    assertClean(page);
  });

  test('admin: revoking in the console takes the enclave out of the robot\'s bundle', async () => {
    const page = adminPage;
    await page.goto(`${server.url}/ui/#/keystores/fleet/enclaves/fleet/amr/driver`);
    await page.getByRole('heading', { name: /Enclave \/fleet\/amr\/driver/ }).waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Revoke' }).click();
    await page.locator('#enclave-status', { hasText: 'revoked' }).waitFor();
    const held = await amr.fetchAndReport();
    assert.deepEqual(held.enclaves, ['fleet:/fleet/amr/planner']);
    await page.goto(`${server.url}/ui/#/robots/amr-1`);
    await page.getByRole('heading', { name: 'Robot amr-1' }).waitFor();
    const shown = await page.locator('#held').innerText();
    assert.match(shown, /\/fleet\/amr\/planner/);
    assert.doesNotMatch(shown, /\/fleet\/amr\/driver/);
    assertClean(page);
  });

  test('admin: create an enclave and upload its policy in the console; its permissions read as topics per direction', async () => {
    const page = adminPage;
    await page.goto(`${server.url}/ui/#/keystores/fleet`);
    await page.getByLabel('New enclave path').fill('/fleet/amr/camera');
    await page.getByRole('button', { name: 'Create enclave' }).click();
    await page.getByText('Created /fleet/amr/camera.').waitFor();
    await page.locator('#enclave-tree a[href="#/keystores/fleet/enclaves/fleet/amr/camera"]').click();
    await page.getByRole('heading', { name: /Enclave \/fleet\/amr\/camera/ }).waitFor();
    const policy =
      '<policy version="0.2.0"><enclaves><enclave path="/fleet/amr/camera"><profiles><profile ns="/" node="camera">' +
      '<topics publish="ALLOW"><topic>image</topic></topics><topics subscribe="DENY"><topic>secret</topic></topics>' +
      '</profile></profiles></enclave></enclaves></policy>';
    await page.getByLabel('Policy file (sros2 policy XML)').setInputFiles({ name: 'camera.policy.xml', mimeType: 'application/xml', buffer: Buffer.from(policy) });
    await page.getByRole('button', { name: 'Upload policy' }).click();
    await page.getByText('New permissions for fleet:/fleet/amr/camera from camera.policy.xml.').waitFor();
    await page.locator('.facts', { hasText: 'policy' }).waitFor();
    const rows = await page.locator('.permissions tbody tr').allInnerTexts();
    assert.ok(rows.some((r) => /^allowed\s+publish\s+rt\/image\b/.test(r)), JSON.stringify(rows));
    assert.ok(rows.some((r) => /^denied\s+subscribe\s+rt\/secret\b/.test(r)), JSON.stringify(rows));
    const signed = await admin.getEnclave<{ permissionsXml: string; permissionsSource: string }>('fleet', '/fleet/amr/camera');
    assert.equal(signed.permissionsSource, 'policy');
    assert.match(signed.permissionsXml, /<deny_rule>[\s\S]*rt\/secret/);
    await assertAccessible(page, 'an enclave page with permissions');
    assertClean(page);
  });

  test('admin: expiry horizon (SVG chart by week, under 30 days first), access and audit pages', async () => {
    const page = adminPage;
    await admin.call('POST', '/v1/keystores/fleet/enclaves', { path: '/fleet/amr/short', validityDays: 10 });
    await nav(page, 'Expiry horizon').click();
    await page.locator('#horizon-chart').waitFor();
    assert.ok((await page.locator('#horizon-chart rect.bar-enclave').count()) >= 2, 'bars for the enclaves');
    const firstRow = await page.locator('#expiring tbody tr').first().innerText();
    assert.match(firstRow, /\/fleet\/amr\/short/);
    assert.equal(await page.locator('#expiring tbody tr').first().locator('.urgent').count(), 1);
    const all = await page.locator('#expiring').innerText();
    assert.match(all, /CA CN=sros2CA/);
    assert.doesNotMatch(all, /\/fleet\/amr\/driver/, 'a revoked enclave no longer counts');
    if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, 'console-expiry.png') });
    await assertAccessible(page, 'the expiry horizon');

    await nav(page, 'Access').click();
    await page.locator('#grants tbody tr', { hasText: 'fleet:/thirdparty/acme/**' }).waitFor();
    assert.match(await page.locator('#users').innerText(), /acme[\s\S]*member/);
    assert.match(await page.locator('#bindings').innerText(), /fleet:\/thirdparty\/acme\/camera/);
    await assertAccessible(page, 'the access page');

    await nav(page, 'Audit').click();
    await page.locator('#audit-chain', { hasText: 'Hash chain verified' }).waitFor();
    await page.getByLabel('Action (ends with * for a prefix)').fill('enclave.revoke');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await auditRows(page, (rows) => rows.length === 1 && rows[0]!.includes('enclave.revoke') && rows[0]!.includes('fleet:/fleet/amr/driver'));
    await page.getByLabel('Action (ends with * for a prefix)').fill('');
    await page.getByLabel('Target contains').fill('amr/planner');
    await page.getByRole('button', { name: 'Apply filters' }).click();
    await auditRows(page, (rows) => rows.length > 0 && rows.some((r) => r.includes('enclave.create')) && rows.every((r) => r.includes('amr/planner')));
    await assertAccessible(page, 'the audit page');
    assertClean(page);
  });

  test('member, by keyboard only: sees only their enclaves and robots, no admin page, and no hint of the others', async () => {
    const page = await openConsole();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'username');
    await page.keyboard.type(MEMBER.name);
    await page.keyboard.press('Tab');
    await page.keyboard.type(MEMBER.password);
    await page.keyboard.press('Enter');
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await fleetRow(page, 'acme-bot').waitFor();
    assert.deepEqual(await page.locator('#fleet tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key'))), ['acme-bot']);
    assert.equal(await nav(page, 'Access').count(), 0);
    assert.equal(await nav(page, 'Audit').count(), 0);

    // Tab from the skip link through the navigation to Keystores, and follow it with Enter.
    for (let i = 0; i < 10 && (await page.evaluate(() => document.activeElement?.textContent)) !== 'Keystores'; i++) await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Keystores and enclaves' }).waitFor();
    await page.locator('#keystores tr[data-key="fleet"]').waitFor();
    assert.match(await page.locator('#keystores tr[data-key="fleet"] td[data-col="enclaves"]').innerText(), /^1$/);
    await page.getByRole('link', { name: 'fleet', exact: true }).click();
    await page.locator('#enclave-tree').getByRole('link', { name: 'camera' }).waitFor();
    assert.equal(await page.getByLabel('New enclave path').count(), 0, 'no create form without manage');
    await assertAccessible(page, "a member's keystore page");
    await page.locator('#enclave-tree').getByRole('link', { name: 'camera' }).click();
    await page.getByRole('heading', { name: /Enclave \/thirdparty\/acme\/camera/ }).waitFor();
    assert.match(await page.locator('.permissions').innerText(), /allowed/);
    assert.equal(await page.getByRole('button', { name: 'Revoke' }).count(), 0, 'no revoke without manage');
    assert.equal(await page.getByRole('button', { name: 'Rotate' }).count(), 0, 'no rotate without manage');

    await nav(page, 'Expiry horizon').click();
    await page.locator('#expiring tbody tr').first().waitFor();
    const expiring = await page.locator('#expiring tbody').innerText();
    assert.match(expiring, /\/thirdparty\/acme\/camera/);

    // What is not theirs does not exist: the same answer as for a path that was never made.
    await page.goto(`${server.url}/ui/#/keystores/fleet/enclaves/thirdparty/other/lidar`);
    const hidden = await page.getByRole('alert').filter({ hasText: 'lidar' }).innerText();
    await page.goto(`${server.url}/ui/#/keystores/fleet/enclaves/thirdparty/other/nothing`);
    const absent = await page.getByRole('alert').filter({ hasText: 'nothing' }).innerText();
    assert.equal(hidden.replace('lidar', 'X'), absent.replace('nothing', 'X'));
    await page.goto(`${server.url}/ui/#/audit`);
    await page.getByRole('heading', { name: 'Not found' }).waitFor();
    await page.goto(`${server.url}/ui/#/robots/amr-1`);
    await page.getByRole('alert').filter({ hasText: 'amr-1' }).waitFor();

    // Nothing the member was shown names another team's enclave or robot.
    for (const hash of ['#/fleet', '#/keystores', '#/keystores/fleet', '#/expiry']) {
      await page.goto(`${server.url}/ui/${hash}`);
      await page.locator('main h1').waitFor();
      await page.waitForLoadState('networkidle');
      const text = await page.locator('body').innerText();
      for (const secret of ['lidar', 'driver', 'planner', 'amr-1', 'spare']) assert.ok(!text.includes(secret), `${hash} mentions ${secret}`);
    }
    // Each refused look-up is a 404 from the API (logged by Chromium as a failed resource load).
    assertClean(page, [/status of 404/, /status of 404/, /status of 404/]);
    memberPage = page;
  });

  test('a session the server ends (password changed) brings back the sign-in form with the reason; sign-out forgets the token', async () => {
    const page = memberPage;
    await admin.call('PATCH', `/v1/users/${MEMBER.name}`, { password: 'a-new-acme-password' });
    await nav(page, 'Fleet').click();
    await page.locator('#login-message', { hasText: 'Your session ended' }).waitFor();
    assert.equal(await page.getByLabel('Password').inputValue(), '');
    await signIn(page, MEMBER.name, 'a-new-acme-password');
    await fleetRow(page, 'acme-bot').waitFor();
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.locator('#login-message', { hasText: 'You signed out.' }).waitFor();
    await page.goBack();
    assert.equal(await page.getByLabel('User name').count(), 1, 'still signed out after going back');
    assert.equal(await page.evaluate(() => document.cookie + JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage })), '{}{}', 'the token is kept in memory only');
    assertClean(page, [/status of 401/]);
  });

  test('a session that reaches its expiry returns to the sign-in form with the reason', async () => {
    const page = await openConsole(true);
    await signIn(page, 'admin', ADMIN_PASSWORD);
    await fleetRow(page, 'amr-1').waitFor();
    // The server's default token lifetime is 15 minutes: one second past it, the console ends the session.
    await page.clock.fastForward(15 * 60_000 + 1000);
    await page.locator('#login-message', { hasText: 'Your session expired. Sign in again.' }).waitFor();
    assert.equal(await page.locator('#fleet').count(), 0, 'nothing of the session is left on screen');
    assertClean(page);
  });
});
