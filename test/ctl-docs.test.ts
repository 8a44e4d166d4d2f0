/**
 * docs/enclavectl.md shows what enclavectl really prints. Every ```console block there is replayed in order
 * against a real server: each `$` line runs in bash (so quoting, `export` and `VAR=value` prefixes work as
 * on the page) with `enclavectl` on the PATH, in a folder laid out like a checkout after `npm start`
 * (`data/`, `examples/`, `test/fixtures/`). What it prints must be what the page shows, up to `normalize`
 * (times, serials, hashes, IDs and sizes differ between two honest runs). Server messages are written once,
 * in the server, and shown once, on the page; this test only compares the two.
 *
 * After a deliberate change of output, rewrite the page from a real run and read the diff:
 *   ENCLAVECTL_DOCS_UPDATE=1 node --import tsx --test test/ctl-docs.test.ts
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CTL_MAIN, ctl, describeRun, tempDir } from './helpers/ctl.js';
import { idsIn, normalize, parseTranscripts, rewrite, type Step } from './helpers/doc-transcript.js';
import { startServer, type ServerProcess } from './helpers/server-process.js';
import { REPO } from './helpers/tools.js';

const DOC = path.join(REPO, 'docs', 'enclavectl.md');
const DOC_URL = 'https://localhost:8443';
const UPDATE = process.env.ENCLAVECTL_DOCS_UPDATE === '1';
const SHORT_LIVED_PW = 'short-lived-admin-password';
const markdown = fs.readFileSync(DOC, 'utf8');
const steps = parseTranscripts(markdown);

interface Ran {
  command: string;
  output: string[];
  exit: number;
}

describe('docs/enclavectl.md: every console example is what enclavectl prints', () => {
  const work = tempDir('enclavectl-docs-');
  const envFile = path.join(work, '.env-after');
  const expiredHome = path.join(work, 'expired-home');
  let server: ServerProcess;
  /** A second server whose tokens last one second, for "session expired". */
  let shortLived: ServerProcess;
  /** The shell environment, carried from one step to the next as bash left it. */
  let env: NodeJS.ProcessEnv;
  /** IDs on the page → the IDs this run made, learnt from the outputs, used in later commands. */
  const ids = new Map<string, string>();
  const ran = new Map<Step, Ran>();

  /** Setups a page cannot show as commands, named by the comment on the command line. */
  const hidden: Record<string, () => Promise<NodeJS.ProcessEnv>> = {
    "after the token's lifetime": async () => {
      const { expiresAt } = JSON.parse(fs.readFileSync(path.join(expiredHome, 'enclavectl', 'config.json'), 'utf8'));
      // The server accepts a token up to 5 s past its expiry (clock tolerance).
      await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(expiresAt) + 6_500 - Date.now())));
      return { XDG_CONFIG_HOME: expiredHome };
    },
    'server stopped': async () => {
      await server.stop();
      return {};
    },
  };

  const toDoc = (text: string): string => text.replaceAll(server.url, DOC_URL).replaceAll(shortLived.url, DOC_URL);

  /** Runs one page command in bash; returns what it printed and the environment it left. */
  const bash = (command: string, runEnv: NodeJS.ProcessEnv): Promise<{ status: number; stdout: string; stderr: string }> => {
    const script = `${command}\n__status=$?; env -0 > "$__DOC_ENV_FILE"; exit $__status`;
    const child = spawn('bash', ['-c', script], { cwd: work, env: { ...runEnv, __DOC_ENV_FILE: envFile }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += String(c)));
    child.stderr.on('data', (c) => (stderr += String(c)));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (status) => resolve({ status: status ?? -1, stdout, stderr }));
    });
  };
  const envLeft = (): NodeJS.ProcessEnv => {
    const left: NodeJS.ProcessEnv = {};
    for (const entry of fs.readFileSync(envFile, 'utf8').split('\0')) {
      const eq = entry.indexOf('=');
      if (eq > 0) left[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
    delete left.__DOC_ENV_FILE;
    return left;
  };

  before(async () => {
    const home = path.join(work, 'home');
    const bin = path.join(work, 'bin');
    fs.mkdirSync(home);
    fs.mkdirSync(bin);
    for (const dir of ['examples', 'test']) fs.symlinkSync(path.join(REPO, dir), path.join(work, dir));
    const ctlBin = path.join(bin, 'enclavectl');
    fs.writeFileSync(ctlBin, `#!/bin/sh\nexec '${process.execPath}' --import '${import.meta.resolve('tsx')}' '${CTL_MAIN}' "$@"\n`, { mode: 0o755 });
    // The page's admin reads data/initial-admin-password, as after a first `npm start`.
    [server, shortLived] = await Promise.all([
      startServer(['--data-dir', path.join(work, 'data'), '--listen', '127.0.0.1:0']),
      startServer(['--data-dir', path.join(work, 'short-data'), '--listen', '127.0.0.1:0'], {
        ENCLAVE_ADMIN_PASSWORD: SHORT_LIVED_PW,
        ENCLAVE_TOKEN_TTL_SECONDS: '1',
      }),
    ]);
    const login = await ctl(['login', '--server', shortLived.url, '--ca', path.join(work, 'short-data', 'tls', 'ca.cert.pem'), '--user', 'admin'], {
      home: expiredHome,
      env: { ENCLAVECTL_PASSWORD: SHORT_LIVED_PW },
    });
    assert.equal(login.status, 0, describeRun(login));
    env = { PATH: `${bin}:${process.env.PATH}`, HOME: home, LANG: 'C.UTF-8', TZ: 'UTC' };
  });

  after(async () => {
    await Promise.all([server?.stop(), shortLived?.stop()]);
    if (UPDATE) fs.writeFileSync(DOC, rewrite(markdown, steps, ran));
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('the page has console examples, and shows failures with their exit code', () => {
    assert.ok(steps.length >= 20, `only ${steps.length} commands found`);
    assert.ok(steps.some((s) => s.exit !== 0));
    for (const s of steps) assert.ok(s.expected.every((l) => !/^\[exit/.test(l.trim())), `$ ${s.command}: [exit N] must be the last line`);
  });

  for (const step of steps) {
    test(`$ ${step.command}`, async () => {
      const setup = step.comment !== undefined ? hidden[step.comment] : undefined;
      const extra = setup ? await setup() : {};
      let command = step.command.replaceAll(DOC_URL, server.url);
      for (const [shown, real] of ids) command = command.replaceAll(shown, real);
      const r = await bash(command, { ...env, ...extra });
      // A hidden setup's overrides belong to its one command.
      if (!setup) env = envLeft();
      const printed = toDoc(`${r.stderr}${r.stdout}`).replace(/\n$/, '');
      const output = printed === '' ? [] : printed.split('\n');
      ran.set(step, { command: toDoc(command), output, exit: r.status });
      const shownIds = idsIn(step.expected.join('\n'));
      const realIds = idsIn(printed);
      if (shownIds.length === realIds.length) shownIds.forEach((id, i) => ids.set(id, realIds[i]!));
      if (UPDATE) return;
      const context = `$ ${step.command}\n--- the page shows:\n${step.expected.join('\n')}\n--- enclavectl printed (exit ${r.status}):\n${printed}`;
      assert.equal(r.status, step.exit, context);
      assert.equal(normalize(printed), normalize(step.expected.join('\n')), context);
    });
  }
});
