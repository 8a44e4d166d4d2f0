/**
 * The state folder (default /var/lib/enclave-agent, 0700) holds the enrollment:
 *   state.json       server URL, robot name and labels (written last: it marks a complete enrollment)
 *   ca.pem           the pinned server CA (absent for a loopback http:// server)
 *   device.key.pem   the device private key, PKCS#8 PEM, 0600; it never leaves this folder
 */
import * as fs from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { AgentError } from './errors.js';
import { lstatOrNull, readFileNoFollow } from './fsutil.js';

export const STATE_FILE = 'state.json';
export const CA_FILE = 'ca.pem';
export const KEY_FILE = 'device.key.pem';

export interface SavedState {
  version: 1;
  server: string;
  robot: string;
  labels: Record<string, string>;
  enrolledAt: string;
}

export interface Enrollment extends SavedState {
  stateDir: string;
  ca: string | undefined;
  key: KeyObject;
}

/** True when the folder holds an enrollment (or the remains of one). */
export function hasEnrollment(stateDir: string): boolean {
  return lstatOrNull(join(stateDir, STATE_FILE)) !== null || lstatOrNull(join(stateDir, KEY_FILE)) !== null;
}

function mode(st: fs.Stats): string {
  return (st.mode & 0o7777).toString(8);
}

/** The agent's user, or undefined where there are no uids. */
function agentUid(): number | undefined {
  return process.getuid?.();
}

/**
 * The state folder must be a real folder owned by the agent's user that nobody else can write into: whoever
 * can write there can swap the pinned CA or the server URL (and so receive the device's login).
 */
function checkStateDir(stateDir: string, st: fs.Stats): void {
  if (st.isSymbolicLink() || !st.isDirectory()) throw new AgentError(`state folder ${stateDir} is not a folder`);
  const uid = agentUid();
  if (uid !== undefined && st.uid !== uid) {
    throw new AgentError(`state folder ${stateDir} belongs to uid ${st.uid}, not to this agent (uid ${uid}): refusing to use it (chown it, or enroll again)`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new AgentError(`state folder ${stateDir} is writable by others (mode ${mode(st)}): chmod 700 it`);
  }
}

/** `state.json` and `ca.pem`: regular files of the agent's user, not writable by group or others. */
function checkStateFile(path: string, what: string): void {
  const st = lstatOrNull(path);
  if (!st) return; // missing: reported where it is read
  if (!st.isFile()) throw new AgentError(`${what} ${path} is not a regular file`);
  const uid = agentUid();
  if (uid !== undefined && st.uid !== uid) {
    throw new AgentError(`${what} ${path} belongs to uid ${st.uid}, not to this agent (uid ${uid}): refusing to trust it`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new AgentError(`${what} ${path} is writable by others (mode ${mode(st)}): refusing to trust it (chmod go-w it)`);
  }
}

/** Creates the state folder 0700, or checks that an existing one is a real folder of ours. */
export function ensureStateDir(stateDir: string): void {
  const st = lstatOrNull(stateDir);
  if (!st) {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    fs.chmodSync(stateDir, 0o700);
    return;
  }
  checkStateDir(stateDir, st);
}

export function loadEnrollment(stateDir: string): Enrollment {
  const statePath = join(stateDir, STATE_FILE);
  const dirSt = lstatOrNull(stateDir);
  if (!dirSt) throw new AgentError(`not enrolled: no ${stateDir} (run "enclave-agent enroll" first)`);
  checkStateDir(stateDir, dirSt);
  checkStateFile(statePath, 'enrollment file');
  checkStateFile(join(stateDir, CA_FILE), 'pinned CA');
  let saved: SavedState;
  try {
    saved = JSON.parse(readFileNoFollow(statePath).toString('utf8')) as SavedState;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new AgentError(`not enrolled: no ${statePath} (run "enclave-agent enroll" first)`);
    if (code === 'EACCES') throw new AgentError(`cannot read ${statePath}: permission denied (run as the user that enrolled, or pass --state-dir)`);
    throw new AgentError(`cannot read ${statePath}: ${(err as Error).message}`);
  }
  if (typeof saved?.server !== 'string' || typeof saved.robot !== 'string') {
    throw new AgentError(`${statePath} is damaged: enroll again with --force`);
  }

  const keyPath = join(stateDir, KEY_FILE);
  const st = lstatOrNull(keyPath);
  if (!st) throw new AgentError(`device key ${keyPath} is missing: enroll again with --force`);
  if (!st.isFile()) throw new AgentError(`device key ${keyPath} is not a regular file`);
  const uid = agentUid();
  if (uid !== undefined && st.uid !== uid) {
    throw new AgentError(`device key ${keyPath} belongs to uid ${st.uid}, not to this agent (uid ${uid}): refusing to use it`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new AgentError(`device key ${keyPath} is accessible by others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 it`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileNoFollow(keyPath));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EACCES') {
      throw new AgentError(`cannot read device key ${keyPath}: permission denied (run as the user that enrolled, or pass --state-dir)`);
    }
    throw new AgentError(`device key ${keyPath} is unreadable: enroll again with --force`);
  }

  let ca: string | undefined;
  try {
    ca = readFileNoFollow(join(stateDir, CA_FILE)).toString('utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new AgentError(`cannot read ${join(stateDir, CA_FILE)}: ${(err as Error).message}`);
  }
  return { ...saved, labels: saved.labels ?? {}, stateDir, ca, key };
}
