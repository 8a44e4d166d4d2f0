/**
 * `npm run package:agent`: enclave-agent as a robot package (docs/agent-package.md).
 *
 *   1. esbuild bundle of client/agent + client/common (scripts/lib/agent-bundle.ts: Node built-ins only);
 *   2. a Node single executable application: the bundle's SEA blob injected (postject) into a stripped copy
 *      of the node binary running this script, so the robot needs no Node.js and no compiler;
 *   3. dist/packages/enclave-agent_<version>_<deb arch>.deb (dpkg-deb; maintainer scripts from client/debian/)
 *      and dist/packages/enclave-agent_<version>_linux-<node arch>.tar.gz holding the same files.
 *
 * Needs Linux, Node 20, dpkg-deb, gzip, tar (and strip, optional). Prints one line per step.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { bundleAgent, ROOT } from './lib/agent-bundle.js';

const OUT = join(ROOT, 'dist', 'packages');
const WORK = join(OUT, '.build');
// The fuse string Node 20 looks for to know that a SEA blob was injected (node/src/node_sea.cc).
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const DEB_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'armhf' };

const t0 = Date.now();
function step(msg: string): void {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
}
function fail(msg: string): never {
  process.stderr.write(`package-agent: ${msg}\n`);
  process.exit(1);
}
function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    fail(`${cmd} ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}
const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/** Reproducible timestamps: the last commit's time (SOURCE_DATE_EPOCH wins), like Debian's builds. */
function sourceDateEpoch(): number {
  if (process.env.SOURCE_DATE_EPOCH) return Number(process.env.SOURCE_DATE_EPOCH);
  try {
    return Number(execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    return Math.floor(Date.now() / 1000);
  }
}

/** Node's licence file: the executable is Node, so its licence ships with it. */
function nodeLicense(): string | undefined {
  const base = dirname(dirname(process.execPath));
  for (const p of [join(base, 'LICENSE'), join(base, 'share/doc/node/LICENSE'), '/usr/share/doc/nodejs/LICENSE', '/usr/local/share/doc/node/LICENSE']) {
    if (existsSync(p)) return readFileSync(p, 'utf8');
  }
  return undefined;
}

function manPage(version: string, help: string, date: string): string {
  const esc = (s: string): string => s.replace(/\\/g, '\\e').replace(/^([.'])/gm, '\\&$1').replace(/-/g, '\\-');
  return `.TH ENCLAVE-AGENT 1 "${date}" "enclave-agent ${version}" "User Commands"
.SH NAME
enclave-agent \\- keeps a robot's ROS 2 DDS-Security enclaves in RAM
.SH SYNOPSIS
.B enclave-agent
.I COMMAND
[\\fIOPTIONS\\fR]
.SH DESCRIPTION
enclave-agent enrolls the robot once with a one-time token, then keeps the enclaves bound to it in a tmpfs
folder (default /run/enclave-agent), replaces them when the server changes them, and purges them when it stops.
Under systemd it runs as enclave-agent.service; enable it only after \\fBenclave-agent enroll\\fR.
.SH USAGE
.nf
${esc(help.trimEnd())}
.fi
.SH FILES
.TP
.I /var/lib/enclave-agent
enrollment: device key (0600), pinned server CA, state.json. Removed by \\fBdpkg \\-\\-purge\\fR.
.TP
.I /run/enclave-agent
the enclaves (tmpfs, purged when the agent stops).
.TP
.I /lib/systemd/system/enclave-agent.service
the systemd unit.
.TP
.I /usr/share/doc/enclave-agent/ros2-app.service.d-example.conf
drop-in for a ROS 2 unit that uses the agent's enclaves.
`;
}

async function main(): Promise<void> {
  if (process.platform !== 'linux') fail('builds Linux packages only (run it on Linux)');
  const nodeArch = process.arch;
  const debArch = DEB_ARCH[nodeArch] ?? fail(`no Debian architecture known for ${nodeArch}`);
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 20) fail(`needs Node 20 or newer for single executable applications (this is ${process.version})`);
  for (const tool of ['dpkg-deb', 'tar']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      fail(`${tool} is not installed (apt-get install ${tool === 'dpkg-deb' ? 'dpkg' : tool})`);
    }
  }
  let postject: { inject: (file: string, name: string, data: Buffer, opts: { sentinelFuse: string }) => Promise<void> };
  try {
    postject = createRequire(import.meta.url)('postject') as typeof postject;
  } catch {
    fail('the devDependency postject is missing: run npm ci');
  }

  rmSync(WORK, { recursive: true, force: true });
  mkdirSync(WORK, { recursive: true });

  // 1. bundle
  const bundle = await bundleAgent(join(WORK, 'enclave-agent.cjs'));
  const version = bundle.version;
  step(`bundle: ${bundle.sources.length} files of client/agent + client/common -> ${(bundle.bytes / 1024).toFixed(0)} KiB; imports only ${bundle.imports.join(' ')}`);

  // 2. single executable application
  const seaConfig = join(WORK, 'sea-config.json');
  const blob = join(WORK, 'sea-prep.blob');
  writeFileSync(
    seaConfig,
    JSON.stringify({ main: bundle.outfile, output: blob, disableExperimentalSEAWarning: true, useCodeCache: true }, null, 2),
  );
  run(process.execPath, ['--experimental-sea-config', seaConfig], { cwd: WORK });
  const exe = join(WORK, 'enclave-agent');
  copyFileSync(process.execPath, exe);
  chmodSync(exe, 0o755);
  // Debug symbols are most of a distribution's node binary and useless on a robot.
  let stripped = 'not stripped (no strip)';
  try {
    execFileSync('strip', ['--strip-all', exe], { stdio: 'ignore' });
    stripped = 'stripped';
  } catch {
    // keeps the unstripped binary: bigger, same behaviour
  }
  await postject.inject(exe, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE });
  const said = run(exe, ['--version'], { env: { PATH: '/usr/bin:/bin' } }).trim();
  if (said !== `enclave-agent ${version}`) fail(`the executable says "${said}", expected "enclave-agent ${version}"`);
  step(`executable: node ${process.version} (${stripped}) + SEA blob ${(statSync(blob).size / 1024).toFixed(0)} KiB -> ${mb(statSync(exe).size)}; runs: ${said}`);

  // 3. the file tree (same for .deb and .tar.gz)
  const epoch = sourceDateEpoch();
  const date = new Date(epoch * 1000).toISOString().slice(0, 10);
  const help = run(exe, ['--help']);
  const tree = join(WORK, 'root');
  const put = (rel: string, data: string | Buffer, mode: number): void => {
    const p = join(tree, rel);
    mkdirSync(dirname(p), { recursive: true, mode: 0o755 });
    writeFileSync(p, data);
    chmodSync(p, mode);
  };
  put('usr/bin/enclave-agent', readFileSync(exe), 0o755);
  put('lib/systemd/system/enclave-agent.service', readFileSync(join(ROOT, 'client/systemd/enclave-agent.service')), 0o644);
  const doc = 'usr/share/doc/enclave-agent';
  put(`${doc}/ros2-app.service.d-example.conf`, readFileSync(join(ROOT, 'client/systemd/ros2-app.service.d-example.conf')), 0o644);
  put(`${doc}/README.md`, readFileSync(join(ROOT, 'client/agent/README.md')), 0o644);
  const license = nodeLicense();
  if (license === undefined) step('warning: Node.js LICENSE file not found next to this node; copyright names it by reference only');
  put(
    `${doc}/copyright`,
    readFileSync(join(ROOT, 'client/debian/copyright'), 'utf8') +
      (license !== undefined ? `\nFiles: usr/bin/enclave-agent (the Node.js runtime inside it)\nLicense: Node.js\n${license.trimEnd().split('\n').map((l) => (l.trim() === '' ? ' .' : ` ${l}`)).join('\n')}\n` : ''),
    0o644,
  );
  put(
    `${doc}/changelog.gz`,
    gzipSync(`enclave-agent (${version}) stable; urgency=medium\n\n  * Built from ros2-enclave-server ${version}.\n\n -- ros2-enclave-server <noreply@localhost>  ${new Date(epoch * 1000).toUTCString().replace('GMT', '+0000')}\n`, { level: 9 }),
    0o644,
  );
  put('usr/share/man/man1/enclave-agent.1.gz', gzipSync(manPage(version, help, date), { level: 9 }), 0o644);

  const files = run('find', ['.', '-type', 'f'], { cwd: tree }).trim().split('\n').map((f) => f.slice(2)).sort();
  const installedKiB = Math.ceil(files.reduce((n, f) => n + statSync(join(tree, f)).size, 0) / 1024);

  // 4. .tar.gz (same files, no maintainer scripts), owned by root, timestamps fixed
  mkdirSync(OUT, { recursive: true });
  const tgzName = `enclave-agent_${version}_linux-${nodeArch}.tar.gz`;
  rmSync(join(OUT, tgzName), { force: true });
  run('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', `--mtime=@${epoch}`, '-czf', join(OUT, tgzName), '-C', tree, ...files]);
  step(`${tgzName}: ${files.length} files, ${mb(statSync(join(OUT, tgzName)).size)}`);

  // 5. .deb
  const debian = join(tree, 'DEBIAN');
  mkdirSync(debian, { mode: 0o755 });
  const control = readFileSync(join(ROOT, 'client/debian/control'), 'utf8')
    .replace('@VERSION@', version)
    .replace('@ARCH@', debArch)
    .replace('@INSTALLED_SIZE@', String(installedKiB));
  if (/@[A-Z_]+@/.test(control)) fail('client/debian/control has a placeholder this script does not fill');
  put('DEBIAN/control', control, 0o644);
  for (const s of ['postinst', 'prerm', 'postrm']) put(`DEBIAN/${s}`, readFileSync(join(ROOT, 'client/debian', s)), 0o755);
  put('DEBIAN/md5sums', run('md5sum', files, { cwd: tree }), 0o644);
  const debName = `enclave-agent_${version}_${debArch}.deb`;
  rmSync(join(OUT, debName), { force: true });
  run('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', tree, join(OUT, debName)], { env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) } });
  step(`${debName}: ${mb(statSync(join(OUT, debName)).size)} (installed ${mb(installedKiB * 1024)})`);

  rmSync(WORK, { recursive: true, force: true });
  step(`done: ${OUT}`);
}

main().catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
