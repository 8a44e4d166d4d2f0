/**
 * An internal fault in the agent process: a preload (like helpers/agent-clock.ts) that throws from a SIGWINCH
 * handler, so the test decides when the agent meets an uncaught exception. Nothing else in the agent changes;
 * the server it talks to is the real one.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const PRELOAD = `
process.on('SIGWINCH', () => {
  throw new Error('injected fault');
});
`;

/** Environment for `spawnAgent`: the agent throws an uncaught exception when it receives SIGWINCH. */
export function faultOnSigwinchEnv(dir: string): NodeJS.ProcessEnv {
  const file = join(dir, 'fault-on-sigwinch.mjs');
  if (!fs.existsSync(file)) fs.writeFileSync(file, PRELOAD);
  const nodeOptions = [process.env.NODE_OPTIONS, `--import=${pathToFileURL(file).href}`].filter(Boolean).join(' ');
  return { NODE_OPTIONS: nodeOptions };
}
