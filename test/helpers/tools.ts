import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Everything a test reads lives in the repository: a fresh clone must be enough to run the suite.
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIXTURES = path.join(REPO, 'test', 'fixtures', 'sros2');
export const EXAMPLE_POLICIES = path.join(REPO, 'examples', 'policies');
export const DDS_PAIR_CHECK = path.join(REPO, 'tools', 'dds-check', 'dds-pair-check.sh');

/** Runs openssl without throwing: status, stdout alone, and stdout+stderr. */
export function openssl(args: string[], input?: string): { status: number; stdout: string; out: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, out: `${r.stdout}${r.stderr}` };
}

/**
 * Why the DDS peer cannot run here (a Debian package missing), or null when it can. The script itself is
 * part of the repository, so its absence is a failure, not a reason to skip.
 */
export function ddsUnavailable(): string | null {
  for (const bin of ['ddsperf', 'idlc', 'gcc']) {
    if (spawnSync('which', [bin]).status !== 0) return `${bin} not installed (apt-get install cyclonedds-tools cyclonedds-dev gcc)`;
  }
  return null;
}

export function ddsPairCheck(a: string, b: string, extra: string[] = []): { status: number; out: string } {
  const r = spawnSync('bash', [DDS_PAIR_CHECK, ...extra, a, b], { encoding: 'utf8', timeout: 90_000 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Writes an enclave's runtime files into a folder (as the agent would, minus the RAM-disk checks). */
export function writeEnclave(dir: string, files: Record<string, string>): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content, { mode: 0o600 });
  return dir;
}

export function untar(archive: Buffer, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xzf', '-', '-C', dir], { input: archive });
}
