/**
 * `enclave-agent enroll`: make the device key (P-256, in Node's crypto), register its public half with the
 * one-time token, and save the enrollment. The private key is written 0600 before the server is asked (so
 * an accepted key is never lost) and only becomes `device.key.pem` once the server accepted it.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { checkServerUrl, HttpClient, NetworkError, parseJson, statusError } from '../common/http.js';
import type { EnrollRequest, EnrollResponse } from '../common/robot-wire.js';
import { AgentError, EXIT_USAGE, RefusedError } from './errors.js';
import { createFile, removeEntry, replaceFile } from './fsutil.js';
import type { Logger } from './log.js';
import { CA_FILE, ensureStateDir, hasEnrollment, KEY_FILE, loadEnrollment, STATE_FILE, type SavedState } from './state.js';
import { agentVersion } from './version.js';

export interface EnrollOptions {
  server: string;
  caFile?: string;
  token: string;
  stateDir: string;
  force: boolean;
}

export async function enroll(opts: EnrollOptions, log: Logger): Promise<SavedState> {
  let ca: string | undefined;
  if (opts.caFile !== undefined) {
    try {
      ca = fs.readFileSync(opts.caFile, 'utf8');
      new X509Certificate(ca); // fail here, clearly, rather than in a TLS handshake
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new AgentError(code ? `cannot read CA file ${opts.caFile}: ${code}` : `CA file ${opts.caFile} is not a PEM certificate`);
    }
  }
  const problem = checkServerUrl(opts.server, ca !== undefined);
  if (problem) throw new AgentError(problem, EXIT_USAGE);
  if (new URL(opts.server).protocol === 'http:') {
    log.warn(`plain http to ${new URL(opts.server).host}: acceptable on loopback only`);
    ca = undefined;
  }

  if (hasEnrollment(opts.stateDir) && !opts.force) {
    let who = '';
    try {
      const e = loadEnrollment(opts.stateDir);
      who = ` as robot ${e.robot} with ${e.server}`;
    } catch {
      // damaged: still refuse without --force
    }
    throw new AgentError(`already enrolled${who} (${opts.stateDir}): use --force to replace that enrollment`);
  }

  ensureStateDir(opts.stateDir);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pendingKey = join(opts.stateDir, `${KEY_FILE}.new`);
  removeEntry(pendingKey);
  createFile(pendingKey, privateKey.export({ type: 'pkcs8', format: 'pem' }), 0o600, { fsync: true });

  const http = new HttpClient(opts.server, ca);
  try {
    const body: EnrollRequest = {
      token: opts.token,
      publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      agentVersion: agentVersion(),
    };
    let res;
    try {
      res = await http.request({ method: 'POST', path: 'v1/enroll', json: body, timeoutMs: 30_000 });
    } catch (err) {
      throw new AgentError(`cannot reach ${opts.server}: ${err instanceof NetworkError ? err.message : String(err)}`);
    }
    if (res.status === 401 || res.status === 403) {
      const err = statusError(res, 'enroll');
      throw new RefusedError(`enrollment refused: ${err.serverMessage ?? 'the token is invalid, expired or already used'}`);
    }
    if (res.status !== 201 && res.status !== 200) throw new AgentError(statusError(res, 'enroll').message);
    const answer = parseJson(res) as Partial<EnrollResponse> | undefined;
    const robot = answer?.robot?.name;
    if (typeof robot !== 'string' || robot.length === 0) throw new AgentError('enroll: the server did not name the robot');

    const saved: SavedState = {
      version: 1,
      server: opts.server,
      robot,
      labels: answer?.robot?.labels ?? {},
      enrolledAt: new Date().toISOString(),
    };
    fs.renameSync(pendingKey, join(opts.stateDir, KEY_FILE));
    if (ca !== undefined) replaceFile(join(opts.stateDir, CA_FILE), ca, 0o644, { fsync: true });
    else removeEntry(join(opts.stateDir, CA_FILE));
    replaceFile(join(opts.stateDir, STATE_FILE), `${JSON.stringify(saved, null, 2)}\n`, 0o600, { fsync: true });
    return saved;
  } finally {
    removeEntry(pendingKey);
    http.close();
  }
}
