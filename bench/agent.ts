/**
 * enclave-agent start-up: how long from process start until the robot's enclaves are on disk, and how much
 * memory that takes, next to baselines measured in the same run on the same machine.
 *
 *   node --import tsx bench/agent.ts [--runs 30] [--warmup 3] [--rss-runs 10] [--write-docs]
 *
 * Set-up: builds the agent (`npm run build`) when dist/ is older than client/; starts the real server
 * (`server/main.ts serve`, HTTPS with its own CA, loopback) in a temp folder; creates keystore `bench`
 * with three enclaves bound to robot `bench_robot`; enrolls that robot with the compiled agent.
 *
 * Measured (wall time from spawning the process):
 *   node -e 0            baseline: Node's own start-up and exit
 *   curl bundle → tmpfs  baseline: curl GETs the same bundle (`/v1/robot/bundle`, pinned CA, a robot token
 *                        made once beforehand) and writes the JSON to /dev/shm, then exits. It skips what
 *                        the agent must do: sign a device assertion and log in, validate the bundle, write
 *                        each enclave's files atomically with their modes.
 *   agent exec -- true   `enclave-agent exec --enclave bench:/bench/talker --splay 0 -- true`: start, log in,
 *                        fetch, write the enclave, run `true`, purge, exit.
 *   agent run → READY    `enclave-agent run --splay 0` until it logs `ready:` (all three enclaves written);
 *                        then it is sent SIGTERM (not timed).
 * With hyperfine (`apt-get install -y hyperfine`) the three commands that exit are timed by
 * `hyperfine -N`; `run` never exits on its own, so it is always timed by this script's own loop (spawn →
 * `ready:` line on stderr). Without hyperfine, every row uses that loop.
 * Peak RSS: `/usr/bin/time -v` ("Maximum resident set size"; `apt-get install -y time`), median over
 * --rss-runs runs. For `run`, the agent is sent SIGTERM once ready and time reports on its exit.
 *
 * Prints a Markdown section; --write-docs puts it into docs/benchmarks.md under `## enclave-agent start-up`
 * (replacing that section only).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HttpClient, parseJson } from '../client/common/http.js';
import { signAssertion } from '../client/agent/robot-client.js';
import { loadEnrollment } from '../client/agent/state.js';
import { Admin, startServer, type RealServer } from '../test/helpers/agent-server.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SECTION = '## enclave-agent start-up';
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    'rss-runs': { type: 'string', default: '10' },
    'write-docs': { type: 'boolean', default: false },
  },
});
const RUNS = Number(values.runs);
const WARMUP = Number(values.warmup);
const RSS_RUNS = Number(values['rss-runs']);

const work = fs.mkdtempSync(join(os.tmpdir(), 'enclave-agent-bench-'));
const shm = fs.mkdtempSync('/dev/shm/enclave-agent-bench-');
const log = (m: string): void => void process.stderr.write(`bench: ${m}\n`);

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** The compiled agent: dist/ from `npm run build`, rebuilt when any client/ source is newer than its output. */
function ensureBuilt(): { main: string; note: string } {
  const main = join(REPO, 'dist/client/agent/main.js');
  const stale = sources(join(REPO, 'client')).filter((src) => {
    const out = join(REPO, 'dist', relative(REPO, src)).replace(/\.ts$/, '.js');
    return !fs.existsSync(out) || fs.statSync(out).mtimeMs < fs.statSync(src).mtimeMs;
  });
  if (stale.length === 0) return { main, note: 'dist/ up to date' };
  log(`dist/ is stale (${stale.length} file(s), e.g. ${relative(REPO, stale[0]!)}): npm run build`);
  const r = spawnSync('npm', ['run', 'build'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status === 0) return { main, note: 'built with npm run build' };
  // Another part of the tree may not compile right now; the agent alone still can (it imports nothing else).
  log(`npm run build failed; compiling the agent alone:\n${(r.stdout + r.stderr).split('\n').slice(0, 10).join('\n')}`);
  const out = join(work, 'dist');
  execFileSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '--outDir', out, '--rootDir', REPO, '--module', 'NodeNext',
    '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--strict', '--skipLibCheck', '--verbatimModuleSyntax', join(REPO, 'client/agent/main.ts')]);
  fs.copyFileSync(join(REPO, 'package.json'), join(out, 'package.json'));
  return { main: join(out, 'client/agent/main.js'), note: 'agent compiled alone (npm run build failed)' };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const quote = (a: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

interface Row {
  name: string;
  measures: string;
  runs: number;
  timer: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  rssMb: number;
}

/** Wall time of a command that exits, spawn to exit, RUNS times after WARMUP: hyperfine -N, else our loop. */
function timeExiting(argv: string[], name: string): { times: number[]; timer: string } {
  if (have('hyperfine')) {
    const json = join(work, `hyperfine-${name.replace(/\W+/g, '_')}.json`);
    execFileSync('hyperfine', ['-N', '--style', 'none', '--warmup', String(WARMUP), '--runs', String(RUNS), '--export-json', json, '-n', name,
      argv.map(quote).join(' ')], { stdio: ['ignore', 'ignore', 'inherit'] });
    const result = (JSON.parse(fs.readFileSync(json, 'utf8')) as { results: { times: number[]; exit_codes: number[] }[] }).results[0]!;
    if (result.exit_codes.some((c) => c !== 0)) throw new Error(`${name}: non-zero exit in hyperfine`);
    return { times: result.times.map((s) => s * 1000), timer: 'hyperfine -N' };
  }
  const times: number[] = [];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`${name}: exit ${r.status}`);
    if (i >= WARMUP) times.push(ms);
  }
  return { times, timer: 'own loop' };
}

function maxRssKb(file: string): number {
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(fs.readFileSync(file, 'utf8'));
  if (!m) throw new Error(`no "Maximum resident set size" in ${file}`);
  return Number(m[1]);
}

/** Median peak RSS (MB) of a command that exits, by /usr/bin/time -v. */
function rssExiting(argv: string[]): number {
  const kb: number[] = [];
  for (let i = 0; i < RSS_RUNS; i++) {
    const out = join(work, 'time.txt');
    const r = spawnSync('/usr/bin/time', ['-v', '-o', out, ...argv], { stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}`);
    kb.push(maxRssKb(out));
  }
  return median(kb) / 1024;
}

/**
 * Starts `argv` (optionally under /usr/bin/time -v), resolves when its stderr shows `ready:` with the
 * elapsed ms and the agent's own "enclaves in place N ms after process start", then SIGTERMs the agent.
 */
async function untilReady(argv: string[], timeFile?: string): Promise<{ ms: number; selfMs: number | undefined }> {
  const full = timeFile ? ['/usr/bin/time', '-v', '-o', timeFile, ...argv] : argv;
  const t0 = process.hrtime.bigint();
  const child = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const ms = await new Promise<number>((res, rej) => {
    let ready = false;
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (!ready && err.includes('ready:')) {
        ready = true;
        res(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    });
    void exited.then((code) => rej(new Error(`agent exited (${code}) before ready:\n${err}`)));
  });
  // The agent is time's child when timed: signal the agent itself, by its pid.
  const agentPid = timeFile ? Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0]) : child.pid!;
  await new Promise((r) => setTimeout(r, 20)); // let the self-measurement line arrive
  process.kill(agentPid, 'SIGTERM');
  const code = await exited;
  if (code !== 0) throw new Error(`agent run exited with ${code}:\n${err}`);
  const self = /enclaves in place (\d+) ms after process start/.exec(err);
  return { ms, selfMs: self ? Number(self[1]) : undefined };
}

function machine(): string {
  const cpu = os.cpus()[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown CPU';
  const mem = (os.totalmem() / 1024 ** 3).toFixed(1);
  const virt = spawnSync('systemd-detect-virt', [], { encoding: 'utf8' }).stdout?.trim();
  return `${os.cpus().length} × ${cpu}, ${mem} GiB RAM, Linux ${os.release()}${virt && virt !== 'none' ? ` (${virt})` : ''}`;
}

async function main(): Promise<void> {
  if (!fs.existsSync('/usr/bin/time')) throw new Error('/usr/bin/time is missing: apt-get install -y time');
  if (!have('curl')) throw new Error('curl is missing');
  const build = ensureBuilt();
  log(build.note);
  const loadBefore = os.loadavg()[0]!;

  let server: RealServer | undefined;
  try {
    server = await startServer({ dataDir: join(work, 'data'), env: { ENCLAVE_ROBOT_TOKEN_TTL_SECONDS: '7200' } });
    const admin = await Admin.login(server);
    const paths = ['/bench/talker', '/bench/listener', '/bench/camera'];
    await admin.createKeystore('bench');
    await admin.createRobot('bench_robot');
    for (const p of paths) {
      await admin.createEnclave('bench', p);
      await admin.bind('bench', p, 'bench_robot');
    }
    const stateDir = join(work, 'state');
    execFileSync(process.execPath, [build.main, 'enroll', '--server', server.url, '--ca', server.caFile!, '--token', await admin.enrollmentToken('bench_robot'),
      '--state-dir', stateDir], { stdio: ['ignore', 'ignore', 'inherit'] });
    admin.close();

    // A robot token for the curl baseline, made once the way the agent makes one (device assertion).
    const enrollment = loadEnrollment(stateDir);
    const http = new HttpClient(server.url, enrollment.ca);
    const login = await http.request({ method: 'POST', path: 'v1/auth/robot', json: { assertion: signAssertion(enrollment.key, enrollment.robot, Date.now()) }, timeoutMs: 10_000 });
    if (login.status !== 200) throw new Error(`robot login: HTTP ${login.status}`);
    const token = (parseJson(login) as { token: string }).token;
    http.close();

    const bundleFile = join(shm, 'bundle.json');
    const node = process.execPath;
    const commands: { name: string; measures: string; argv: string[] }[] = [
      { name: '`node -e 0`', measures: "baseline: Node's own start-up", argv: [node, '-e', '0'] },
      {
        name: '`curl` bundle → tmpfs',
        measures: 'baseline: GET the same bundle with a ready token (pinned CA), write the JSON to /dev/shm',
        argv: ['curl', '-sS', '--fail', '--cacert', server.caFile!, '-H', `Authorization: Bearer ${token}`, '-o', bundleFile, `${server.url}/v1/robot/bundle`],
      },
      {
        name: '`enclave-agent exec … -- true`',
        measures: 'start → log in → fetch → write 1 enclave → run `true` → purge → exit',
        argv: [node, build.main, 'exec', '--state-dir', stateDir, '--runtime-dir', join(shm, 'exec'), '--splay', '0', '--enclave', 'bench:/bench/talker', '--', 'true'],
      },
    ];
    const runArgv = [node, build.main, 'run', '-v', '--state-dir', stateDir, '--runtime-dir', join(shm, 'run'), '--splay', '0'];

    // Sanity: every command works and curl gets the bundle the agent gets.
    for (const c of commands) {
      const r = spawnSync(c.argv[0]!, c.argv.slice(1), { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${c.name} failed (${r.status}): ${r.stderr}`);
    }
    const bundle = JSON.parse(fs.readFileSync(bundleFile, 'utf8')) as { keystores: { enclaves: unknown[] }[] };
    const bundleKb = fs.statSync(bundleFile).size / 1024;
    if (bundle.keystores[0]?.enclaves.length !== 3) throw new Error('the curl baseline did not get the 3-enclave bundle');

    const rows: Row[] = [];
    for (const c of commands) {
      log(`timing ${c.name}`);
      const { times, timer } = timeExiting(c.argv, c.name.replace(/`/g, ''));
      log(`peak RSS of ${c.name}`);
      rows.push({ name: c.name, measures: c.measures, runs: times.length, timer, medianMs: median(times), minMs: Math.min(...times), maxMs: Math.max(...times), rssMb: rssExiting(c.argv) });
    }

    log('timing enclave-agent run → READY');
    const readyTimes: number[] = [];
    const selfTimes: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const { ms, selfMs } = await untilReady(runArgv);
      if (i < WARMUP) continue;
      readyTimes.push(ms);
      if (selfMs !== undefined) selfTimes.push(selfMs);
    }
    log('peak RSS of enclave-agent run');
    const runRss: number[] = [];
    for (let i = 0; i < RSS_RUNS; i++) {
      const tf = join(work, 'time-run.txt');
      await untilReady(runArgv, tf);
      runRss.push(maxRssKb(tf) / 1024);
    }
    rows.push({
      name: '`enclave-agent run` → READY',
      measures: 'start → log in → fetch → write 3 enclaves → `ready:` logged (READY=1)',
      runs: readyTimes.length,
      timer: 'own loop',
      medianMs: median(readyTimes),
      minMs: Math.min(...readyTimes),
      maxMs: Math.max(...readyTimes),
      rssMb: median(runRss),
    });

    const curl = rows[1]!;
    const nodeRow = rows[0]!;
    const readyRow = rows[3]!;
    const hf = have('hyperfine') ? spawnSync('hyperfine', ['--version'], { encoding: 'utf8' }).stdout.trim() : 'not installed';
    const curlVersion = spawnSync('curl', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]!.split(' ').slice(0, 2).join(' ');
    const lines = [
      SECTION,
      '',
      'Made by `node --import tsx bench/agent.ts` (see the comment at its top). Everything runs on one machine: the real',
      'server (`server/main.ts serve`, HTTPS with its own CA, SQLite) on 127.0.0.1, keystore `bench` with three',
      'enclaves (default allow-all policy) bound to one enrolled robot, and the agent compiled by `npm run build`.',
      'Every row is wall time from spawning the process; the ratios are against the baselines measured in the same run.',
      '',
      `- Machine: ${machine()}; Node ${process.version}; ${curlVersion}; hyperfine ${hf.replace(/^hyperfine /, '')}.`,
      `- Load average (1 min) ${loadBefore.toFixed(2)} at the start and ${os.loadavg()[0]!.toFixed(2)} at the end (other work on the machine shows up here).`,
      `- Date: ${new Date().toISOString()}. Runs: ${RUNS} timed per row after ${WARMUP} warm-up run(s); peak RSS is the median of ${RSS_RUNS} runs of \`/usr/bin/time -v\` (maximum resident set size).`,
      `- Bundle: 3 enclaves, ${bundleKb.toFixed(1)} KiB of JSON. Agent build: ${build.note}.`,
      '- Baselines: `node -e 0` (what any Node program pays to start and exit) and `curl` fetching the same bundle',
      '  with a robot token made beforehand and writing it to /dev/shm (no login, no validation, one file).',
      '- Reproduce: `apt-get install -y hyperfine time` (hyperfine is optional: without it the script times every row',
      '  itself), then `node --import tsx bench/agent.ts --write-docs` on an otherwise idle machine.',
      '',
      '| command | what it does | timer | runs | median ms | min–max ms | peak RSS MB | time × curl | time × `node -e 0` | RSS × curl |',
      '|---|---|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.name} | ${r.measures} | ${r.timer} | ${r.runs} | ${r.medianMs.toFixed(1)} | ${r.minMs.toFixed(0)}–${r.maxMs.toFixed(0)} | ${r.rssMb.toFixed(1)} | ` +
          `${(r.medianMs / curl.medianMs).toFixed(2)} | ${(r.medianMs / nodeRow.medianMs).toFixed(2)} | ${(r.rssMb / curl.rssMb).toFixed(2)} |`,
      ),
      '',
      `Reading it: \`run\` reaches READY in ${readyRow.medianMs.toFixed(0)} ms, of which ${nodeRow.medianMs.toFixed(0)} ms is Node starting at all ` +
        `(\`node -e 0\`); the other ${(readyRow.medianMs - nodeRow.medianMs).toFixed(0)} ms load the agent's modules, make the TLS connection, sign ` +
        `the device assertion and log in, fetch and check the bundle, and write three enclaves. curl does one request with a token it already ` +
        `has and writes one file, in ${curl.medianMs.toFixed(0)} ms. Peak RSS is mostly the \`node\` binary itself: ` +
        `${nodeRow.rssMb.toFixed(0)} MB for \`node -e 0\` against ${readyRow.rssMb.toFixed(0)} MB for the agent.`,
      '',
      selfTimes.length
        ? `Cross-check: the agent's own measure in the same \`run\` loop (\`-v\` logs "enclaves in place N ms after process start", ` +
          `from \`performance.now()\`) has a median of ${median(selfTimes).toFixed(0)} ms over ${selfTimes.length} runs.`
        : '',
      '',
    ];
    const section = lines.join('\n');
    process.stdout.write(`${section}\n`);
    if (values['write-docs']) writeDocs(section);
  } finally {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmSync(shm, { recursive: true, force: true });
  }
}

/** Replaces (or appends) this section in docs/benchmarks.md, leaving every other section as it is. */
function writeDocs(section: string): void {
  const file = join(REPO, 'docs/benchmarks.md');
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmarks\n';
  const start = text.indexOf(`${SECTION}\n`);
  let next: string;
  if (start < 0) {
    next = `${text.replace(/\n*$/, '\n\n')}${section.trimEnd()}\n`;
  } else {
    const rest = text.slice(start + SECTION.length);
    const m = /\n## /.exec(rest);
    const end = m ? start + SECTION.length + m.index + 1 : text.length;
    next = `${text.slice(0, start)}${section.trimEnd()}\n${end < text.length ? `\n${text.slice(end)}` : ''}`;
  }
  fs.writeFileSync(file, next);
  log(`wrote ${relative(REPO, file)}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
