/**
 * Checks a bundle from the server before any of it touches the file system: keystore names and enclave
 * paths become folder names, so they must follow the name rules; only the seven runtime files are accepted.
 * A bundle with any problem is refused whole (the agent keeps what it holds).
 */
import { createHash, X509Certificate } from 'node:crypto';
import {
  isEnclavePath,
  isKeystoreName,
  isRuntimeFileName,
  REQUIRED_RUNTIME_FILES,
  type RuntimeFileName,
} from '../common/names.js';
import type { IdentityMode, Revision } from '../common/robot-wire.js';

const MAX_FILE_BYTES = 1024 * 1024;
/**
 * A revision is sent back as `If-None-Match: "<revision>"` and written to logs and reports: only letters and
 * digits (the server uses 32 hex digits), so a hostile value can never break a header or a log line.
 */
export const REVISION = /^[A-Za-z0-9]{1,128}$/;
/** Certificate serials are at most 20 bytes (RFC 5280): 40 hex digits, lowercase as the server writes them. */
const SERIAL = /^[0-9a-f]{1,40}$/;
/** What the server holds back from a per-robot enclave: the key is the robot's, the certificate comes when issued. */
const ROBOT_MADE: ReadonlySet<RuntimeFileName> = new Set(['key.pem', 'cert.pem']);

export interface HeldEnclave {
  keystore: string;
  path: string;
  notAfter: string;
  notAfterMs: number;
  /**
   * Absent or `shared`: the server sends all files. `per-robot`: it sends no `key.pem`, and `cert.pem` only once
   * this robot holds a certificate (identity.ts adds the robot's own key and certificate).
   */
  identity?: IdentityMode;
  /** Per-robot: the serial of the certificate in `cert.pem` (lowercase hex), as the server names it. */
  identitySerial?: string;
  files: Partial<Record<RuntimeFileName, string>>;
}

export interface ValidBundle {
  revision: Revision;
  enclaves: HeldEnclave[];
}

export class InvalidBundle extends Error {
  constructor(message: string) {
    super(`bundle refused: ${message}`);
    this.name = 'InvalidBundle';
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseBundle(body: unknown): ValidBundle {
  if (!isObject(body)) throw new InvalidBundle('not a JSON object');
  const { revision, keystores } = body;
  if (typeof revision !== 'string' && typeof revision !== 'number') throw new InvalidBundle('no revision');
  if (!REVISION.test(String(revision))) throw new InvalidBundle(`invalid revision ${JSON.stringify(revision).slice(0, 40)} (letters and digits only)`);
  if (!Array.isArray(keystores)) throw new InvalidBundle('no keystores list');
  const enclaves: HeldEnclave[] = [];
  const seenKeystores = new Set<string>();
  for (const ks of keystores) {
    if (!isObject(ks)) throw new InvalidBundle('a keystore entry is not an object');
    const name = ks.name;
    if (!isKeystoreName(name)) throw new InvalidBundle(`invalid keystore name ${JSON.stringify(name)?.slice(0, 80)}`);
    if (seenKeystores.has(name)) throw new InvalidBundle(`keystore ${name} listed twice`);
    seenKeystores.add(name);
    if (!Array.isArray(ks.enclaves)) throw new InvalidBundle(`keystore ${name}: no enclaves list`);
    const seenPaths = new Set<string>();
    for (const e of ks.enclaves) {
      if (!isObject(e)) throw new InvalidBundle(`keystore ${name}: an enclave entry is not an object`);
      const path = e.path;
      if (!isEnclavePath(path)) {
        throw new InvalidBundle(`keystore ${name}: invalid enclave path ${JSON.stringify(path)?.slice(0, 80)}`);
      }
      const where = `${name}:${path}`;
      if (seenPaths.has(path)) throw new InvalidBundle(`${where} listed twice`);
      seenPaths.add(path);
      const notAfterMs = typeof e.notAfter === 'string' ? Date.parse(e.notAfter) : Number.NaN;
      if (Number.isNaN(notAfterMs)) throw new InvalidBundle(`${where}: invalid notAfter`);
      if (!isObject(e.files)) throw new InvalidBundle(`${where}: no files`);
      const files: Partial<Record<RuntimeFileName, string>> = {};
      for (const [file, content] of Object.entries(e.files)) {
        if (!isRuntimeFileName(file)) throw new InvalidBundle(`${where}: unexpected file ${JSON.stringify(file).slice(0, 80)}`);
        if (typeof content !== 'string' || content.length === 0) throw new InvalidBundle(`${where}: ${file} is empty`);
        if (Buffer.byteLength(content) > MAX_FILE_BYTES) throw new InvalidBundle(`${where}: ${file} is too large`);
        files[file] = content;
      }
      const identity = e.identity ?? 'shared';
      if (identity !== 'shared' && identity !== 'per-robot') throw new InvalidBundle(`${where}: unknown identity mode ${JSON.stringify(identity).slice(0, 40)}`);
      const serial = e.identitySerial;
      if (serial !== undefined && (identity !== 'per-robot' || typeof serial !== 'string' || !SERIAL.test(serial))) {
        throw new InvalidBundle(`${where}: invalid identitySerial`);
      }
      if (identity === 'per-robot') {
        // A key from the server would be a key more than this robot knows: refuse rather than use or ignore it.
        if (files['key.pem'] !== undefined) throw new InvalidBundle(`${where}: a per-robot enclave must not carry key.pem`);
        if ((serial === undefined) !== (files['cert.pem'] === undefined)) throw new InvalidBundle(`${where}: cert.pem and identitySerial come together`);
      }
      for (const file of REQUIRED_RUNTIME_FILES) {
        if (identity === 'per-robot' && ROBOT_MADE.has(file)) continue;
        if (files[file] === undefined) throw new InvalidBundle(`${where}: ${file} is missing`);
      }
      const held: HeldEnclave = { keystore: name, path, notAfter: new Date(notAfterMs).toISOString(), notAfterMs, files };
      if (identity === 'per-robot') held.identity = identity;
      if (serial !== undefined) held.identitySerial = serial;
      enclaves.push(held);
    }
  }
  return { revision, enclaves };
}

export function enclaveId(e: { keystore: string; path: string }): string {
  return `${e.keystore}:${e.path}`;
}

/** A digest of an enclave's files, to tell a rotation from an unchanged enclave. */
export function enclaveDigest(e: HeldEnclave): string {
  const h = createHash('sha256');
  for (const name of Object.keys(e.files).sort()) {
    h.update(name).update('\0').update(e.files[name as RuntimeFileName]!).update('\0');
  }
  return h.digest('hex');
}

/** Enclaves whose certificate starts after `nowMs` (this clock is behind, or the server's is ahead). */
export function notYetValid(enclaves: HeldEnclave[], nowMs: number): { enclave: HeldEnclave; notBefore: string }[] {
  const out: { enclave: HeldEnclave; notBefore: string }[] = [];
  for (const enclave of enclaves) {
    const cert = enclave.files['cert.pem'];
    if (cert === undefined) continue; // a per-robot enclave before its certificate is issued
    try {
      const from = Date.parse(new X509Certificate(cert).validFrom);
      if (!Number.isNaN(from) && from > nowMs) out.push({ enclave, notBefore: new Date(from).toISOString() });
    } catch {
      // Not a certificate Node can read: DDS will say so; nothing to compare here.
    }
  }
  return out;
}

/** How the files of one enclave differ between two bundles (names of the runtime files written). */
export interface FileChanges {
  added: RuntimeFileName[];
  changed: RuntimeFileName[];
  removed: RuntimeFileName[];
}

export function diffFiles(before: HeldEnclave['files'], after: HeldEnclave['files']): FileChanges {
  const out: FileChanges = { added: [], changed: [], removed: [] };
  const names = new Set([...Object.keys(before), ...Object.keys(after)] as RuntimeFileName[]);
  for (const name of [...names].sort()) {
    const a = before[name];
    const b = after[name];
    if (a === undefined) out.added.push(name);
    else if (b === undefined) out.removed.push(name);
    else if (a !== b) out.changed.push(name);
  }
  return out;
}

/** What a file change means to an operator; files without a meaning of their own are named. */
const MEANING: Partial<Record<RuntimeFileName, string>> = {
  'cert.pem': 'certificate rotated',
  'permissions.p7s': 'permissions changed',
  'governance.p7s': 'governance changed',
  'identity_ca.cert.pem': 'identity CA changed',
  'permissions_ca.cert.pem': 'permissions CA changed',
};

/**
 * One line for the log: `certificate rotated, crl.pem added (cert.pem, crl.pem, key.pem)`. A new key comes
 * with a new certificate, so it is only named on its own when the certificate stayed (which the server does
 * not do).
 */
export function describeFileChanges(c: FileChanges): string {
  const parts: string[] = [];
  for (const name of c.changed) {
    const meaning = MEANING[name];
    if (meaning) parts.push(meaning);
    else if (name !== 'key.pem' || !c.changed.includes('cert.pem')) parts.push(`${name} changed`);
  }
  for (const name of c.added) parts.push(`${name} added`);
  for (const name of c.removed) parts.push(`${name} removed`);
  const files = [...c.added, ...c.changed, ...c.removed].sort();
  return `${parts.join(', ')} (${files.join(', ')})`;
}

/** What changed between two sets of held enclaves, as `KEYSTORE:PATH` names; `updated` with its file changes. */
export function diffEnclaves(
  before: HeldEnclave[],
  after: HeldEnclave[],
): { added: string[]; updated: { id: string; files: FileChanges }[]; removed: string[] } {
  const old = new Map(before.map((e) => [enclaveId(e), e]));
  const added: string[] = [];
  const updated: { id: string; files: FileChanges }[] = [];
  for (const e of after) {
    const id = enclaveId(e);
    const prev = old.get(id);
    if (prev === undefined) added.push(id);
    else {
      const files = diffFiles(prev.files, e.files);
      if (files.added.length + files.changed.length + files.removed.length > 0) updated.push({ id, files });
    }
    old.delete(id);
  }
  return { added, updated, removed: [...old.keys()] };
}
