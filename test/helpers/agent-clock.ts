/**
 * A robot whose wall clock is wrong. The agent process is started with a preload that shifts its `Date`
 * (`Date.now()` and `new Date()`) by a fixed offset, as libfaketime would for the whole process; nothing
 * else in the agent changes, and the server it talks to is the real one with the real time. TLS
 * certificate checks use OpenSSL's own clock and are not affected.
 *
 * This is the one environment fault the agent tests inject: a wrong robot clock cannot be produced
 * otherwise without changing the host's clock (root, and every other test would see it).
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const PRELOAD = `
const offset = Number(process.env.AGENT_TEST_CLOCK_OFFSET_MS ?? 0);
const RealDate = Date;
class ShiftedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + offset);
    else super(...args);
  }
  static now() {
    return RealDate.now() + offset;
  }
}
globalThis.Date = ShiftedDate;
`;

/** Environment for `spawnAgent` that runs the agent with its clock `offsetMs` off (negative: behind). */
export function shiftedClockEnv(dir: string, offsetMs: number): NodeJS.ProcessEnv {
  const file = join(dir, 'shift-clock.mjs');
  if (!fs.existsSync(file)) fs.writeFileSync(file, PRELOAD);
  const nodeOptions = [process.env.NODE_OPTIONS, `--import=${pathToFileURL(file).href}`].filter(Boolean).join(' ');
  return { NODE_OPTIONS: nodeOptions, AGENT_TEST_CLOCK_OFFSET_MS: String(offsetMs) };
}
