/**
 * The status file `run` keeps in the runtime folder (`.status.json`, no secrets), and the `status` command
 * that reads it.
 */
import { join } from 'node:path';
import type { Revision } from '../common/robot-wire.js';
import { readFileNoFollow } from './fsutil.js';
import { isAlive } from './lock.js';
import { STATUS_FILE, type RuntimeWriter } from './writer.js';

export { isAlive };

export interface AgentStatus {
  pid: number;
  robot: string;
  server: string;
  revision: Revision | null;
  filesystem: string;
  /** READY=1 was sent: every bound enclave was in place. */
  ready: boolean;
  lastContact: string | null;
  lastError: string | null;
  clockSkewMs: number;
  updatedAt: string;
  enclaves: { keystore: string; path: string; notAfter: string }[];
}

/** Writes the status file through the writer, which checks the runtime folder first. */
export function writeStatus(writer: RuntimeWriter, status: AgentStatus): void {
  writer.writeStatusFile(`${JSON.stringify(status, null, 2)}\n`);
}

export function readStatus(runtimeDir: string): AgentStatus | null {
  try {
    return JSON.parse(readFileNoFollow(join(runtimeDir, STATUS_FILE)).toString('utf8')) as AgentStatus;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  return s < 120 ? `${iso} (${s} s ago)` : s < 7200 ? `${iso} (${Math.round(s / 60)} min ago)` : `${iso} (${Math.round(s / 3600)} h ago)`;
}

function until(iso: string, now: number): string {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  if (s <= 0) return 'expired';
  if (s < 7200) return `in ${Math.round(s / 60)} min`;
  if (s < 172800) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

/** Text for `enclave-agent status` (human) or the JSON object for `--json`. */
export function describeStatus(runtimeDir: string, json: boolean, now = Date.now()): string {
  const status = readStatus(runtimeDir);
  const running = status ? isAlive(status.pid) : false;
  if (json) return `${JSON.stringify({ runtimeDir, running, ...(status ?? { enclaves: [] }) }, null, 2)}\n`;
  if (!status) return `nothing held in ${runtimeDir} (no status: "enclave-agent run" is not running there)\n`;
  const lines = [
    `robot ${status.robot} at ${status.server}: ${running ? `running (pid ${status.pid})` : 'not running'}, ` +
      `${status.ready ? 'ready' : 'not ready'}`,
    `revision ${status.revision ?? '-'}, last contact ${ago(status.lastContact, now)}` +
      (Math.abs(status.clockSkewMs) >= 2000 ? `, clock skew ${Math.round(status.clockSkewMs / 1000)} s` : ''),
  ];
  if (status.lastError) lines.push(`last error: ${status.lastError}`);
  if (status.enclaves.length === 0) {
    lines.push('no enclaves held');
  } else {
    const rows = status.enclaves.map((e) => [e.keystore, e.path, `${e.notAfter} (${until(e.notAfter, now)})`]);
    const header = ['KEYSTORE', 'ENCLAVE', 'EXPIRES'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    for (const row of [header, ...rows]) lines.push(row.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c)).join('  '));
  }
  return `${lines.join('\n')}\n`;
}
