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

/** No contact with the server for this long means the status is stale (a healthy agent polls at least every 75 s). */
export const STALE_AFTER_MS = 180_000;

/**
 * Whether the robot can rely on what the agent holds: `problem` is undefined when the agent runs, holds
 * every bound enclave (at least one), and its last exchange with the server, less than STALE_AFTER_MS ago,
 * went well. `enclave-agent status` exits 4 otherwise.
 */
export function readiness(status: AgentStatus | null, running: boolean, now: number): { ready: boolean; problem?: string } {
  const problem = ((): string | undefined => {
    if (!status) return '"enclave-agent run" is not running here (no status)';
    if (!running) return `the agent (pid ${status.pid}) is not running`;
    if (!status.ready || status.enclaves.length === 0) {
      return status.revision === null ? 'no enclaves written yet' : 'no enclave is bound to this robot';
    }
    if (status.lastError) return `server unreachable or failing: ${status.lastError}`;
    const since = status.lastContact ? now - Date.parse(status.lastContact) : Number.NaN;
    if (!(since <= STALE_AFTER_MS)) return `stale: no contact with the server for ${Number.isNaN(since) ? 'ever' : `${Math.round(since / 1000)} s`}`;
    return undefined;
  })();
  return problem === undefined ? { ready: true } : { ready: false, problem };
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

/**
 * Text for `enclave-agent status` (human) or the JSON object for `--json`, and whether the agent is ready
 * (`readiness`): the caller exits 0 or EXIT_NOT_READY on it.
 */
export function describeStatus(runtimeDir: string, json: boolean, now = Date.now()): { text: string; ready: boolean } {
  const status = readStatus(runtimeDir);
  const running = status ? isAlive(status.pid) : false;
  const verdict = readiness(status, running, now);
  if (json) {
    const text = `${JSON.stringify({ runtimeDir, running, ...(status ?? { enclaves: [] }), healthy: verdict.ready, problem: verdict.problem ?? null }, null, 2)}\n`;
    return { text, ready: verdict.ready };
  }
  if (!status) return { text: `nothing held in ${runtimeDir} (no status: "enclave-agent run" is not running there)\n`, ready: false };
  const lines = [
    `robot ${status.robot} at ${status.server}: ${running ? `running (pid ${status.pid})` : 'not running'}, ` +
      `${verdict.ready ? 'ready' : `not ready: ${verdict.problem}`}`,
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
  return { text: `${lines.join('\n')}\n`, ready: verdict.ready };
}
