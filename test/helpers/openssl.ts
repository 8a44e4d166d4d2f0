/** The openssl CLI as the independent referee for server/pki tests. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES } from './tools.js';

export const SROS2_FIXTURES = FIXTURES;

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
  /** stdout + stderr, for assertion messages. */
  out: string;
}

export function run(cmd: string, args: string[], opts: { input?: string | Buffer; cwd?: string; timeout?: number } = {}): RunResult {
  const r = spawnSync(cmd, args, { input: opts.input, cwd: opts.cwd, timeout: opts.timeout ?? 60_000, maxBuffer: 16 << 20 });
  const stdout = r.stdout?.toString('utf8') ?? '';
  const stderr = r.stderr?.toString('utf8') ?? '';
  return { status: r.status ?? -1, stdout, stderr, out: stdout + stderr };
}

export function openssl(args: string[], opts: { input?: string | Buffer; cwd?: string } = {}): RunResult {
  return run('openssl', args, opts);
}

/** Runs openssl and returns stdout; throws with its output when it fails. */
export function opensslOk(args: string[], opts: { input?: string | Buffer; cwd?: string } = {}): string {
  const r = openssl(args, opts);
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.status}):\n${r.out}`);
  return r.stdout;
}

export interface DerElement {
  offset: number;
  depth: number;
  headerLength: number;
  length: number;
  type: string;
  value: string;
}

/** `openssl asn1parse` output as records (offsets into the DER). */
export function asn1parse(file: string, inform: 'PEM' | 'DER' = 'PEM', extra: string[] = []): DerElement[] {
  const out = opensslOk(['asn1parse', '-inform', inform, '-in', file, ...extra]);
  const elements: DerElement[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\d+):d=(\d+)\s+hl=(\d+)\s+l=\s*(\d+)\s+(?:prim|cons):\s*(.*?)\s*(?::(.*))?$/.exec(line);
    if (m === null) continue;
    elements.push({
      offset: Number(m[1]),
      depth: Number(m[2]),
      headerLength: Number(m[3]),
      length: Number(m[4]),
      type: m[5]!.trim(),
      value: (m[6] ?? '').trim(),
    });
  }
  return elements;
}

/** The TBSCertificate's top-level fields (version, serial, sigalg, issuer, validity, subject, spki, extensions). */
export function tbsFields(certFile: string): DerElement[] {
  const all = asn1parse(certFile);
  const tbs = all.find((e) => e.depth === 1);
  if (tbs === undefined) throw new Error('no TBSCertificate');
  const end = tbs.offset + tbs.headerLength + tbs.length;
  return all.filter((e) => e.depth === 2 && e.offset > tbs.offset && e.offset < end);
}

export function slice(der: Buffer, e: DerElement): Buffer {
  return der.subarray(e.offset, e.offset + e.headerLength + e.length);
}

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Extracts the sros2 talker/listener keystore; returns the path of its `keystore/` folder. */
export function extractSros2Keystore(into: string): string {
  const r = run('tar', ['-xzf', path.join(SROS2_FIXTURES, 'talker-listener-keystore.tar.gz'), '-C', into]);
  if (r.status !== 0) throw new Error(`tar failed: ${r.out}`);
  return path.join(into, 'keystore');
}
