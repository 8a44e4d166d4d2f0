/**
 * Entry point of `enclave-agent`: parses the command line, handles signals and exit codes, and loads only
 * the module the command needs (start-up time matters on a robot's boot path).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AgentError, EXIT_FAILURE, EXIT_NOT_READY, EXIT_OK, EXIT_USAGE } from './errors.js';
import { createLogger, errorMessage, type Logger } from './log.js';

const DEFAULT_STATE_DIR = '/var/lib/enclave-agent';
const DEFAULT_RUNTIME_DIR = '/run/enclave-agent';

const USAGE = `usage: enclave-agent COMMAND [OPTIONS]

commands:
  enroll --server URL --ca FILE --token TOKEN [--force]
                       make the device key and register it with a one-time token
  run [--group NAME]   keep this robot's enclaves in the runtime folder (systemd service)
  exec --enclave KS:PATH [--restart-on-change] [--grace SECONDS] -- COMMAND [ARGS...]
                       run COMMAND with one enclave; purge it when COMMAND exits
  purge                remove every enclave from the runtime folder
  status [--json]      what run holds: enclaves, expiry, revision, last contact;
                       exits 0 when ready, 4 when not ready (see exit codes)

options for every command:
  --state-dir DIR      enrollment folder (default ${DEFAULT_STATE_DIR})
  --runtime-dir DIR    tmpfs folder for enclaves (default ${DEFAULT_RUNTIME_DIR};
                       exec: a private folder under $XDG_RUNTIME_DIR or /dev/shm)
  -v, --verbose        debug messages
  -h, --help, --version

run/exec: --splay SECONDS (random delay before the first contact; run 3, exec 0),
  --backoff-base SECONDS (1, at least 0.1), --backoff-max SECONDS (300, at least 1; while the server is
  unreachable the wait is capped at 30 s, and a Retry-After is honoured up to 300 s), --poll-wait SECONDS (30),
  --group NAME
exit codes: 0 ok, 1 failure, 2 usage, 3 refused by the server (or enclave not bound/revoked);
  exec: COMMAND's code
  status: 0 ready (running, every bound enclave written, last contact with the server fine and under 180 s ago),
  4 not ready (not running, no enclave written yet, server unreachable or failing, or stale), 1 unreadable status
`;

const COMMON = {
  'state-dir': { type: 'string' },
  'runtime-dir': { type: 'string' },
  verbose: { type: 'boolean', short: 'v' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const PULL = {
  group: { type: 'string' },
  splay: { type: 'string' },
  'backoff-base': { type: 'string' },
  'backoff-max': { type: 'string' },
  'poll-wait': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const OPTIONS = {
  enroll: { ...COMMON, server: { type: 'string' }, ca: { type: 'string' }, token: { type: 'string' }, force: { type: 'boolean' } },
  run: { ...COMMON, ...PULL },
  exec: { ...COMMON, ...PULL, enclave: { type: 'string' }, 'restart-on-change': { type: 'boolean' }, grace: { type: 'string' } },
  purge: { ...COMMON },
  status: { ...COMMON, json: { type: 'boolean' } },
} as const satisfies Record<string, ParseArgsConfig['options']>;

type Command = keyof typeof OPTIONS;

class UsageError extends AgentError {
  constructor(message: string) {
    super(`${message} (see enclave-agent --help)`, EXIT_USAGE);
  }
}

function seconds(value: string | undefined, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback * 1000;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`--${name} needs a number of seconds`);
  if (n < min) throw new UsageError(`--${name} must be at least ${min} s (smaller values would retry in a storm)`);
  return n * 1000;
}

/** Floors of the retry backoff, in seconds (MIN_BACKOFF_* in backoff.ts). */
const MIN_BACKOFF_BASE_S = 0.1;
const MIN_BACKOFF_MAX_S = 1;

function required(value: string | undefined, name: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const command = argv[0];
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (command === '--version') {
    const { agentVersion } = await import('./version.js');
    process.stdout.write(`enclave-agent ${agentVersion()}\n`);
    return EXIT_OK;
  }
  if (!Object.hasOwn(OPTIONS, command)) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  const cmd = command as Command;
  let parsed;
  try {
    parsed = parseArgs({ args: argv.slice(1), options: OPTIONS[cmd], allowPositionals: cmd === 'exec', strict: true, tokens: true });
  } catch (err) {
    throw new UsageError(errorMessage(err).replace(/\. To specify a positional argument.*$/s, ''));
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const str = (k: string): string | undefined => values[k] as string | undefined;
  const flag = (k: string): boolean => values[k] === true;
  if (flag('help')) {
    process.stdout.write(USAGE);
    return EXIT_OK;
  }
  const log = createLogger({ verbose: flag('verbose') });
  const stateDir = str('state-dir') ?? DEFAULT_STATE_DIR;

  switch (cmd) {
    case 'enroll': {
      const { enroll } = await import('./enroll.js');
      const saved = await enroll(
        { server: required(str('server'), 'server'), caFile: str('ca'), token: required(str('token'), 'token'), stateDir, force: flag('force') },
        log,
      );
      const labels = Object.entries(saved.labels).map(([k, v]) => `${k}=${v}`).join(',');
      process.stdout.write(`enrolled as robot ${saved.robot}${labels ? ` (${labels})` : ''} with ${saved.server}\n`);
      return EXIT_OK;
    }
    case 'purge': {
      const [{ RuntimeWriter }, { lstatOrNull }] = await Promise.all([import('./writer.js'), import('./fsutil.js')]);
      const dir = str('runtime-dir') ?? DEFAULT_RUNTIME_DIR;
      // Same checks as run (owner, mode, parents, tmpfs); refused while an agent runs there (it holds the lock).
      const writer = new RuntimeWriter(dir);
      let result;
      try {
        if (lstatOrNull(dir)) writer.lock();
        result = writer.purge();
      } finally {
        writer.close();
      }
      const { keystores, foreign } = result;
      log.info(keystores > 0 ? `purged ${keystores} keystore(s) from ${dir}` : `nothing to purge in ${dir}`);
      if (foreign.length > 0) log.warn(`left entries the agent did not create in ${dir}: ${foreign.join(', ')}`);
      return EXIT_OK;
    }
    case 'status': {
      const { describeStatus } = await import('./status.js');
      const { text, ready } = describeStatus(str('runtime-dir') ?? DEFAULT_RUNTIME_DIR, flag('json'));
      process.stdout.write(text);
      return ready ? EXIT_OK : EXIT_NOT_READY;
    }
    case 'run':
      return runCommand(str, stateDir, log);
    case 'exec':
      return execCommand(str, flag, parsed.tokens ?? [], parsed.positionals, stateDir, log);
  }
}

function pullOptions(str: (k: string) => string | undefined, stateDir: string, splayDefault: number) {
  return {
    stateDir,
    group: str('group'),
    splayMs: seconds(str('splay'), 'splay', splayDefault),
    backoffBaseMs: seconds(str('backoff-base'), 'backoff-base', 1, MIN_BACKOFF_BASE_S),
    backoffMaxMs: seconds(str('backoff-max'), 'backoff-max', 300, MIN_BACKOFF_MAX_S),
    pollWaitS: Math.min(seconds(str('poll-wait'), 'poll-wait', 30) / 1000, 60),
  };
}

async function runCommand(str: (k: string) => string | undefined, stateDir: string, log: Logger): Promise<number> {
  const { Agent } = await import('./agent.js');
  const agent = new Agent({ ...pullOptions(str, stateDir, 3), runtimeDir: str('runtime-dir') ?? DEFAULT_RUNTIME_DIR }, log);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => agent.stop(sig));
  process.on('exit', () => agent.teardown()); // last resort: never leave keys behind
  return agent.run();
}

async function execCommand(
  str: (k: string) => string | undefined,
  flag: (k: string) => boolean,
  tokens: { kind: string }[],
  positionals: string[],
  stateDir: string,
  log: Logger,
): Promise<number> {
  const enclave = required(str('enclave'), 'enclave');
  const colon = enclave.indexOf(':');
  const keystore = enclave.slice(0, colon);
  const path = enclave.slice(colon + 1);
  const { isEnclavePath, isKeystoreName } = await import('../common/names.js');
  if (colon < 0 || !isKeystoreName(keystore) || !isEnclavePath(path)) {
    throw new UsageError(`--enclave must be KEYSTORE:/enclave/path, not ${JSON.stringify(enclave)}`);
  }
  if (!tokens.some((t) => t.kind === 'option-terminator') || positionals.length === 0) {
    throw new UsageError('exec needs the command after --: enclave-agent exec --enclave KS:PATH -- COMMAND [ARGS...]');
  }
  const { Exec, defaultExecRuntimeDir } = await import('./exec.js');
  const explicitDir = str('runtime-dir');
  const exec = new Exec(
    {
      ...pullOptions(str, stateDir, 0),
      runtimeDir: explicitDir ?? defaultExecRuntimeDir(log),
      privateRuntimeDir: explicitDir === undefined,
      keystore,
      path,
      command: positionals,
      restartOnChange: flag('restart-on-change'),
      graceMs: seconds(str('grace'), 'grace', 10),
    },
    log,
  );
  // COMMAND runs in its own process group and session: the agent forwards these signals to that group
  // (a terminal's ^C or ^\ reaches only the agent's group).
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(sig, () => exec.signal(sig));
  }
  process.on('exit', () => exec.teardown()); // also after an uncaught exception: SIGKILL to COMMAND's group, purge
  return exec.run();
}

const verbose = process.argv.includes('-v') || process.argv.includes('--verbose');
const log = createLogger({ verbose });
process.on('uncaughtException', (err) => {
  log.error(`internal error: ${verbose ? (err.stack ?? err.message) : err.message}`);
  process.exit(EXIT_FAILURE); // 'exit' handlers purge
});
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    log.error(errorMessage(err));
    process.exit(err instanceof AgentError ? err.exitCode : EXIT_FAILURE);
  },
);
