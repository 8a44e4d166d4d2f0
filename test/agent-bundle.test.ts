/**
 * The bundle that `npm run package:agent` injects into the robot executable (scripts/lib/agent-bundle.ts),
 * built for real with esbuild and run with plain node from a folder with no node_modules: it must hold only
 * client/agent + client/common, import only Node built-ins (a robot has no compiler and no server modules),
 * and answer --help / --version / a usage error like the source does. The Debian package itself is proved on a
 * bare Debian 12 container by `npm run test:package` (needs Docker, opt-in).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { bundleAgent, packageVersion, type AgentBundle } from '../scripts/lib/agent-bundle.js';

const dir = fs.mkdtempSync(join(tmpdir(), 'agent-bundle-'));
let bundle: AgentBundle;

before(async () => {
  bundle = await bundleAgent(join(dir, 'enclave-agent.cjs'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs the bundle with node, from the temp folder, with an environment that has no NODE_OPTIONS (no tsx). */
function runBundle(args: string[]) {
  return spawnSync(process.execPath, ['--no-addons', bundle.outfile, ...args], {
    cwd: dir,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    timeout: 15_000,
  });
}

test('the bundle holds client/agent and client/common only, and imports nothing but Node built-ins', () => {
  assert.ok(bundle.sources.includes('client/agent/main.ts'), `sources: ${bundle.sources.join(', ')}`);
  for (const s of bundle.sources) assert.match(s, /^client\/(agent|common)\//, `unexpected source ${s}`);
  const builtins = new Set(builtinModules.map((m) => `node:${m}`));
  assert.ok(bundle.imports.length > 0);
  for (const i of bundle.imports) assert.ok(builtins.has(i), `import ${i} is not a node: built-in`);
  const text = fs.readFileSync(bundle.outfile, 'utf8');
  assert.doesNotMatch(text, /better-sqlite3|\.node["']|server\//, 'no native module or server/ path in the bundle');
  assert.equal(bundle.bytes, fs.statSync(bundle.outfile).size);
});

test('the bundle runs under plain node without addons: --help, --version, usage error', () => {
  const help = runBundle(['--help']);
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: enclave-agent COMMAND/);
  for (const cmd of ['enroll', 'run', 'exec', 'purge', 'status']) assert.match(help.stdout, new RegExp(`^  ${cmd}\\b`, 'm'));

  const version = runBundle(['--version']);
  assert.equal(version.status, 0, version.stderr);
  assert.equal(version.stdout, `enclave-agent ${packageVersion()}\n`);

  const bad = runBundle(['frobnicate']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown command "frobnicate"/);
});

test('the bundled status command reads a runtime folder (lazy-loaded modules are in the bundle)', () => {
  // `status` loads status.js through a dynamic import: in the bundle that must resolve without any file.
  const missing = join(dir, 'no-such-runtime');
  const out = runBundle(['status', '--json', '--runtime-dir', missing]);
  // 4: the documented "not ready" code (no agent has run here).
  assert.equal(out.status, 4, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), {
    runtimeDir: missing,
    running: false,
    enclaves: [],
    healthy: false,
    problem: '"enclave-agent run" is not running here (no status)',
  });
});
