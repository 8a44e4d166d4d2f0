/** Start-up shared by `run` and `exec`: runtime folder (checked, locked, cleaned), enrollment, writer, server client. */
import { resolve } from 'node:path';
import { Backoff } from './backoff.js';
import { enclaveId, notYetValid, type HeldEnclave } from './bundle.js';
import { lstatOrNull } from './fsutil.js';
import { errorMessage, type Logger } from './log.js';
import { RobotClient } from './robot-client.js';
import { prepareRuntimeDir, resolveGroup, type RamFs } from './runtime-dir.js';
import { loadEnrollment, type Enrollment } from './state.js';
import { RuntimeWriter } from './writer.js';

export interface SessionOptions {
  stateDir: string;
  runtimeDir: string;
  group?: string;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export interface Session {
  enrollment: Enrollment;
  runtimeDir: string;
  gid: number | undefined;
  filesystem: RamFs;
  writer: RuntimeWriter;
  client: RobotClient;
  backoff: Backoff;
}

/**
 * Checks and prepares the runtime folder, takes its lock (a second agent on the same folder is refused),
 * removes what a crashed run left there, and only then loads the enrollment and the group: a bad
 * enrollment or --group must not leave stale keys behind. On any error the lock is released again.
 */
export function openSession(opts: SessionOptions, log: Logger): Session {
  const runtimeDir = resolve(opts.runtimeDir);
  let gid: number | undefined;
  let groupProblem: unknown;
  if (opts.group !== undefined) {
    try {
      gid = resolveGroup(opts.group);
    } catch (err) {
      groupProblem = err;
    }
  }
  if (groupProblem !== undefined && !lstatOrNull(runtimeDir)) throw groupProblem; // nothing there to clean up
  const filesystem = prepareRuntimeDir(runtimeDir, gid);
  const writer = new RuntimeWriter(runtimeDir, gid, { onError: (err) => log.warn(`removing an old generation failed: ${errorMessage(err)}`) });
  try {
    writer.lock();
    const stale = writer.purge();
    if (stale.keystores > 0) log.warn(`removed ${stale.keystores} keystore(s) left in ${runtimeDir} by an earlier run`);
    if (stale.foreign.length > 0) log.warn(`${runtimeDir} holds entries the agent did not create: ${stale.foreign.join(', ')}`);
    if (groupProblem !== undefined) throw groupProblem;
    const enrollment = loadEnrollment(opts.stateDir);
    const client = new RobotClient({ server: enrollment.server, ca: enrollment.ca, robot: enrollment.robot, key: enrollment.key, log });
    const backoff = new Backoff(opts.backoffBaseMs, opts.backoffMaxMs);
    return { enrollment, runtimeDir, gid, filesystem, writer, client, backoff };
  } catch (err) {
    writer.close();
    throw err;
  }
}

/**
 * Drops enclaves that have already expired (DDS would refuse them) and warns about certificates that this
 * robot's clock considers not yet valid, with the skew measured against the server.
 */
export function liveEnclaves(enclaves: HeldEnclave[], skewMs: number, log: Logger, now = Date.now()): HeldEnclave[] {
  const live: HeldEnclave[] = [];
  for (const e of enclaves) {
    if (e.notAfterMs > now) live.push(e);
    else log.warn(`enclave ${enclaveId(e)} expired at ${e.notAfter}: not written`);
  }
  for (const { enclave, notBefore } of notYetValid(live, now)) {
    log.warn(
      `certificate of ${enclaveId(enclave)} is not valid before ${notBefore} but this clock says ${new Date(now).toISOString()} ` +
        `(the server's clock is ${Math.round(skewMs / 1000)} s ahead): fix the robot's time, DDS will refuse it until then`,
    );
  }
  return live;
}
