import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO } from './tools.js';

export interface CtlResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface CtlOptions {
  /** XDG_CONFIG_HOME for this run: each identity (admin, acme) gets its own. */
  home: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
}

/**
 * Runs `enclavectl` (TypeScript through tsx) as a child process. Asynchronous on purpose: the server is
 * another child of the test process, and its log pipe must keep draining while the CLI runs.
 */
export function ctl(args: string[], opts: CtlOptions): Promise<CtlResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ENCLAVECTL_PASSWORD: '', ENCLAVECTL_NEW_PASSWORD: '', ...opts.env, XDG_CONFIG_HOME: opts.home };
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'client', 'ctl', 'main.ts'), ...args], {
    cwd: REPO,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += String(c)));
  child.stderr.on('data', (c) => (stderr += String(c)));
  child.stdin.end(opts.input ?? '');
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

export const describeRun = (r: CtlResult): string => `exit ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export const mode = (p: string): number => fs.statSync(p).mode & 0o777;

/** A free loopback port that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Runs a command on a pseudo-terminal (python3's pty module), answering the first prompt matching
 * `prompt` with `answer`. Returns everything the terminal showed, or undefined when python3 is missing.
 */
export function onTerminal(argv: string[], env: NodeJS.ProcessEnv, prompt: string, answer: string): Promise<{ screen: string; status: number } | undefined> {
  const script = `
import os, pty, select, sys, time
argv = sys.argv[3:]
prompt, answer = sys.argv[1].encode(), sys.argv[2].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out = b''
sent = False
end = time.time() + 60
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 0.2)
    if not r:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if not sent and prompt in out:
        os.write(fd, answer + b'\\r')
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`;
  return new Promise((resolve) => {
    const child = spawn('python3', ['-c', script, prompt, answer, ...argv], { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let screen = '';
    child.stdout.on('data', (c) => (screen += String(c)));
    child.on('error', () => resolve(undefined));
    child.on('close', (status) => resolve({ screen, status: status ?? -1 }));
  });
}

export const CTL_MAIN = path.join(REPO, 'client', 'ctl', 'main.ts');
