/**
 * The agent's footprint: its module graph is Node built-ins and its own files only (no npm dependency, no
 * server code, nothing heavy loaded before the command is known), and the compiled agent gets enclaves on
 * disk quickly with little private memory, pulling from the real server (a child process) over loopback
 * HTTPS. Timing bounds are loose (shared CI machines); the measured numbers are printed as test
 * diagnostics. bench/agent.sh measures the same against baselines.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { enrollAgent, REPO, shmDir } from './helpers/agent-proc.js';
import { serverFixture } from './helpers/agent-server.js';

const CLIENT = join(REPO, 'client');
const work = fs.mkdtempSync(join(tmpdir(), 'agent-footprint-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

function imports(file: string): { spec: string; dynamic: boolean; typeOnly: boolean }[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: { spec: string; dynamic: boolean; typeOnly: boolean }[] = [];
  for (const m of text.matchAll(/^(import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'/gms)) out.push({ spec: m[3]!, dynamic: false, typeOnly: Boolean(m[2]) });
  for (const m of text.matchAll(/^import\s+'([^']+)'/gm)) out.push({ spec: m[1]!, dynamic: false, typeOnly: false });
  for (const m of text.matchAll(/await import\('([^']+)'\)/g)) out.push({ spec: m[1]!, dynamic: true, typeOnly: false });
  return out;
}

describe('agent footprint', () => {
  test('the agent (client/agent, client/common) imports only node: built-ins and its own files; client/ never imports server/', () => {
    const files = sources(CLIENT);
    assert.ok(files.length > 5);
    for (const file of files) {
      const agentSide = file.startsWith(join(CLIENT, 'agent/')) || file.startsWith(join(CLIENT, 'common/'));
      for (const { spec } of imports(file)) {
        if (spec.startsWith('node:')) continue;
        if (!spec.startsWith('.')) {
          assert.ok(!agentSide, `${relative(REPO, file)} imports package ${spec}`);
          continue;
        }
        const target = resolve(dirname(file), spec);
        assert.ok(target.startsWith(`${CLIENT}/`), `${relative(REPO, file)} imports ${spec} outside client/`);
        if (agentSide) {
          const ok = target.startsWith(join(CLIENT, 'agent/')) || target.startsWith(join(CLIENT, 'common/'));
          assert.ok(ok, `${relative(REPO, file)} imports ${spec}`);
        }
      }
    }
  });

  test('the entry point loads the command module only once the command is known', () => {
    const statics = imports(join(CLIENT, 'agent/main.ts')).filter((i) => !i.dynamic && !i.typeOnly).map((i) => i.spec);
    assert.deepEqual(statics.sort(), ['./errors.js', './log.js', 'node:util']);
  });

  test('compiled agent: start to enclaves written over loopback HTTPS, and private memory', { timeout: 120_000 }, async (t) => {
    const out = join(work, 'dist');
    execFileSync(
      process.execPath,
      [join(REPO, 'node_modules/typescript/bin/tsc'), '--outDir', out, '--rootDir', REPO, '--module', 'NodeNext', '--moduleResolution', 'NodeNext',
        '--target', 'ES2022', '--strict', '--skipLibCheck', '--verbatimModuleSyntax', join(CLIENT, 'agent/main.ts')],
      { stdio: 'pipe' },
    );
    fs.copyFileSync(join(REPO, 'package.json'), join(out, 'package.json'));
    const fx = await serverFixture({ dataDir: join(work, 'data') });
    try {
      const { admin, server } = fx;
      await admin.createKeystore('ks');
      await admin.createRobot('fast');
      for (const path of ['/a', '/b', '/c']) {
        await admin.createEnclave('ks', path);
        await admin.bind('ks', path, 'fast');
      }
      const stateDir = await enrollAgent({ base: work, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken('fast') });
      const times: number[] = [];
      const memory: { rss: number; anon: number }[] = [];
      for (let i = 0; i < 5; i++) {
        const rt = shmDir('agent-footprint');
        try {
          const child = spawn(process.execPath, [join(out, 'client/agent/main.js'), 'run', '-v', '--splay', '0', '--state-dir', stateDir, '--runtime-dir', rt], {
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          let err = '';
          const inPlace = await new Promise<number>((res, rej) => {
            child.stderr.on('data', (d: Buffer) => {
              err += d.toString();
              const m = /enclaves in place (\d+) ms after process start/.exec(err);
              if (m) res(Number(m[1]));
            });
            child.once('exit', () => rej(new Error(`agent exited: ${err}`)));
          });
          times.push(inPlace);
          const status = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
          const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
          memory.push({ rss: kb('VmRSS') / 1024, anon: kb('RssAnon') / 1024 });
          child.kill('SIGTERM');
          await new Promise((r) => child.once('exit', r));
        } finally {
          fs.rmSync(rt, { recursive: true, force: true });
        }
      }
      const best = Math.min(...times);
      const anon = Math.max(...memory.map((m) => m.anon));
      t.diagnostic(`start → 3 enclaves written: ${times.join(', ')} ms (best ${best} ms)`);
      t.diagnostic(`memory: VmRSS ${memory.map((m) => m.rss.toFixed(1)).join(', ')} MB; private (RssAnon) ${memory.map((m) => m.anon.toFixed(1)).join(', ')} MB`);
      assert.ok(best < 1000, `best start-to-written ${best} ms`);
      assert.ok(anon < 40, `private memory ${anon} MB`);
    } finally {
      await fx.stop();
    }
  });
});
