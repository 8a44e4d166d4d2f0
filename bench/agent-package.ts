/**
 * enclave-agent as a robot package: sizes, and start-up of the single executable (SEA) against the same
 * bundle run by an installed `node`, measured in one run on one machine.
 *
 *   node --import tsx bench/agent-package.ts [--runs 20] [--warmup 3] [--write-docs]
 *
 * Set-up: the artifacts of `npm run package:agent` (built first when dist/packages lacks them or is older
 * than client/); the executable is taken from the .tar.gz, the bundle (scripts/lib/agent-bundle.ts, the very
 * file the SEA carries) is rebuilt here. The real server (`server/main.ts serve`, HTTPS, loopback) in a temp
 * folder with keystore `bench`, enclave /bench/talker bound to robot `bench_robot`, enrolled once by the SEA.
 *
 * Measured, SEA and `node bundle.cjs` alternating run by run (same load for both):
 *   --version           start-up and exit, no network
 *   exec -- true        `exec --enclave bench:/bench/talker --splay 0 -- true`: start, log in, fetch, write
 *                       the enclave to a private tmpfs folder, run `true`, purge, exit
 * Wall time from spawn to exit (own loop, hrtime), median and min–max; peak RSS from `/usr/bin/time -v`
 * (median of --runs). Ratios: SEA ÷ node.
 *
 * Prints a Markdown section; --write-docs replaces `## enclave-agent package` in docs/benchmarks.md.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { bundleAgent, packageVersion, ROOT } from '../scripts/lib/agent-bundle.js';
import { Admin, startServer, type RealServer } from '../test/helpers/agent-server.js';

const SECTION = '## enclave-agent package';
const { values } = parseArgs({
  options: { runs: { type: 'string', default: '20' }, warmup: { type: 'string', default: '3' }, 'write-docs': { type: 'boolean', default: false } },
});
const RUNS = Number(values.runs);
const WARMUP = Number(values.warmup);
const work = fs.mkdtempSync(join(os.tmpdir(), 'agent-package-bench-'));
const say = (m: string): void => void process.stderr.write(`bench: ${m}\n`);
const MB = (bytes: number): string => (bytes / 1e6).toFixed(bytes < 1e6 ? 3 : 1);

const DEB_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'armhf' };
const version = packageVersion();
const deb = join(ROOT, 'dist/packages', `enclave-agent_${version}_${DEB_ARCH[process.arch] ?? process.arch}.deb`);
const tgz = join(ROOT, 'dist/packages', `enclave-agent_${version}_linux-${process.arch}.tar.gz`);

function newestSource(dir: string): number {
  return fs.readdirSync(dir, { withFileTypes: true }).reduce((t, e) => {
    const p = join(dir, e.name);
    return Math.max(t, e.isDirectory() ? newestSource(p) : fs.statSync(p).mtimeMs);
  }, 0);
}

function ensurePackages(): string {
  const built = [deb, tgz].every((f) => fs.existsSync(f)) ? Math.min(fs.statSync(deb).mtimeMs, fs.statSync(tgz).mtimeMs) : 0;
  if (built > newestSource(join(ROOT, 'client'))) return 'dist/packages up to date';
  say('building the packages: npm run package:agent');
  execFileSync('npm', ['run', '--silent', 'package:agent'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  return 'built by npm run package:agent';
}

function mid(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** One run: wall ms (spawn to exit) and peak RSS in MB (time -v); throws on a non-zero exit. */
function once(argv: string[]): { ms: number; rssMb: number } {
  const out = join(work, 'time.txt');
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-v', '-o', out, ...argv], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}\n${r.stderr}`);
  const kb = /Maximum resident set size \(kbytes\): (\d+)/.exec(fs.readFileSync(out, 'utf8'));
  if (!kb) throw new Error('/usr/bin/time -v printed no maximum resident set size');
  return { ms, rssMb: Number(kb[1]) / 1024 };
}

interface Stat { median: number; min: number; max: number; rss: number }

/** Runs both commands alternately (WARMUP untimed rounds first), RUNS timed rounds. */
function pair(a: string[], b: string[]): [Stat, Stat] {
  const res: { ms: number[]; rss: number[] }[] = [{ ms: [], rss: [] }, { ms: [], rss: [] }];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    [a, b].forEach((argv, k) => {
      const r = once(argv);
      if (i >= WARMUP) {
        res[k]!.ms.push(r.ms);
        res[k]!.rss.push(r.rssMb);
      }
    });
  }
  return res.map((r) => ({ median: mid(r.ms), min: Math.min(...r.ms), max: Math.max(...r.ms), rss: mid(r.rss) })) as [Stat, Stat];
}

async function main(): Promise<void> {
  if (!fs.existsSync('/usr/bin/time')) throw new Error('/usr/bin/time is missing: apt-get install -y time');
  const note = ensurePackages();
  execFileSync('tar', ['-xzf', tgz, '-C', work, 'usr/bin/enclave-agent']);
  const sea = join(work, 'usr/bin/enclave-agent');
  const bundle = await bundleAgent(join(work, 'enclave-agent.cjs'));
  const nodeBin = fs.realpathSync(process.execPath);
  const load0 = os.loadavg()[0]!;

  let server: RealServer | undefined;
  try {
    server = await startServer({ dataDir: join(work, 'data'), env: { ENCLAVE_ROBOT_TOKEN_TTL_SECONDS: '7200' } });
    const admin = await Admin.login(server);
    await admin.createKeystore('bench');
    await admin.createRobot('bench_robot');
    await admin.createEnclave('bench', '/bench/talker');
    await admin.bind('bench', '/bench/talker', 'bench_robot');
    const state = join(work, 'state');
    execFileSync(sea, ['enroll', '--server', server.url, '--ca', server.caFile!, '--token', await admin.enrollmentToken('bench_robot'), '--state-dir', state], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    admin.close();

    const execArgs = ['exec', '--enclave', 'bench:/bench/talker', '--state-dir', state, '--splay', '0', '--', 'true'];
    say(`timing --version and exec -- true, ${RUNS} rounds after ${WARMUP} warm-up`);
    const [seaVer, nodeVer] = pair([sea, '--version'], [nodeBin, bundle.outfile, '--version']);
    const [seaExec, nodeExec] = pair([sea, ...execArgs], [nodeBin, bundle.outfile, ...execArgs]);

    const size = (f: string): number => fs.statSync(f).size;
    const sizes = [
      ['`.deb` (xz)', size(deb), 'what a robot downloads'],
      ['`.tar.gz`', size(tgz), 'same files, gzip'],
      ['`/usr/bin/enclave-agent` (SEA)', size(sea), 'stripped node + injected bundle'],
      ['bundle `enclave-agent.cjs`', bundle.bytes, 'the JS alone (needs a Node 20 installed)'],
      ['`node` binary it was made from', size(nodeBin), `${process.version}, as installed here`],
    ] as const;
    const r2 = (x: number): string => x.toFixed(2);
    const row = (name: string, s: Stat, n: Stat): string[] => [
      `| ${name} — SEA | ${s.median.toFixed(1)} | ${s.min.toFixed(0)}–${s.max.toFixed(0)} | ${s.rss.toFixed(1)} | ${r2(s.median / n.median)} | ${r2(s.rss / n.rss)} |`,
      `| ${name} — \`node enclave-agent.cjs\` | ${n.median.toFixed(1)} | ${n.min.toFixed(0)}–${n.max.toFixed(0)} | ${n.rss.toFixed(1)} | 1.00 | 1.00 |`,
    ];
    const cpu = os.cpus()[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown CPU';
    const lines = [
      SECTION,
      '',
      `Made by \`node --import tsx bench/agent-package.ts${values['write-docs'] ? ' --write-docs' : ''}\` (see the comment at its top). The executable is the one in`,
      '`dist/packages` from `npm run package:agent`; the baseline runs the same esbuild bundle with the installed `node`',
      '(what a robot would need Node 20 for). Both run alternately in the same loop against the real server on 127.0.0.1.',
      '',
      `- Machine: ${os.cpus().length} × ${cpu}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, Linux ${os.release()}; Node ${process.version}.`,
      `- Date: ${new Date().toISOString()}. Load average (1 min): ${load0.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end.`,
      `- Runs: ${RUNS} timed rounds per row after ${WARMUP} warm-up; wall time spawn → exit; peak RSS is the median of \`/usr/bin/time -v\`. Packages: ${note}.`,
      '',
      '| artifact | MB | what |',
      '|---|---:|---|',
      ...sizes.map(([n, b, w]) => `| ${n} | ${MB(b)} | ${w} |`),
      '',
      `Executable ÷ (node binary + bundle): ${r2(size(sea) / (size(nodeBin) + bundle.bytes))}; .deb ÷ executable: ${r2(size(deb) / size(sea))}.`,
      '',
      '| command | median ms | min–max ms | peak RSS MB | time × node | RSS × node |',
      '|---|---:|---:|---:|---:|---:|',
      ...row('`--version`', seaVer, nodeVer),
      ...row('`exec … -- true`', seaExec, nodeExec),
      '',
    ];
    const section = lines.join('\n');
    process.stdout.write(`${section}\n`);
    if (values['write-docs']) writeSection(section);
  } finally {
    await server?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Puts the section into docs/benchmarks.md in place of the old one (or at the end). */
function writeSection(section: string): void {
  const file = join(ROOT, 'docs/benchmarks.md');
  const text = fs.readFileSync(file, 'utf8');
  const at = text.indexOf(`${SECTION}\n`);
  const after = at < 0 ? -1 : text.indexOf('\n## ', at + SECTION.length);
  const before = at < 0 ? `${text.trimEnd()}\n\n` : text.slice(0, at);
  const rest = after < 0 ? '' : `\n${text.slice(after + 1)}`;
  fs.writeFileSync(file, `${before}${section.trimEnd()}\n${rest}`);
  say(`wrote ${relative(ROOT, file)}`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
