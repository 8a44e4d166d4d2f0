/**
 * Entry point of `enclavectl`, the admin CLI: a thin, typed client of the server's HTTP API
 * (docs/api.md; usage in docs/enclavectl.md). Every failure ends as one `enclavectl: ...` line on
 * stderr and an exit code from errors.ts, never a stack trace.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { register as registerAccess } from './commands/access.js';
import { register as registerAudit } from './commands/audit.js';
import { register as registerAuth } from './commands/auth.js';
import { register as registerEnclave } from './commands/enclave.js';
import { register as registerKeystore } from './commands/keystore.js';
import { register as registerRobot } from './commands/robot.js';
import { EXIT_OK, EXIT_USAGE, toCtlError } from './errors.js';

const HELP_AFTER = `
Commands (each has --help; --json prints the API's JSON):
  login --server URL --ca FILE --user NAME | logout
  keystore create NAME [--domain-id N] [--split-ca] [--validity-days N] [--identity-mode shared|per-robot]
  keystore import NAME PATH | export NAME OUT.tar.gz [--private] | list | show NAME
  keystore delete NAME | governance NAME FILE
  enclave create KS PATH... [--policy FILE] [--validity-days N] [--identity-mode shared|per-robot]
  enclave list KS | show KS PATH | rotate KS PATH | revoke KS PATH | delete KS PATH
  enclave policy KS PATH FILE | set-mode KS PATH shared|per-robot
  robot create NAME [--label k=v]... | list | show NAME | delete NAME
  robot token NAME [--ttl SECONDS] | set-labels NAME [k=v...] | revoke-key NAME
  robot revoke-identity NAME KS SERIAL
  bind KS PATH (--robot NAME | --selector k=v...) | unbind ID | bindings
  grant USER KS PATTERN --cap read,manage,bind [--robot-selector k=v]...
  grant list [--user NAME] [--keystore KS] | grant delete ID
  user create NAME [--role admin|member] | list | delete NAME | update NAME
  audit [--since TIME] [--actor NAME] [--action A] [--limit N] | audit verify

Deleting, revoking and unbinding (keystore/enclave/robot/user/grant delete, enclave revoke,
enclave set-mode, robot revoke-key, robot revoke-identity, unbind) ask first on a terminal; elsewhere
they need --yes.

Exit codes:
  0  success
  1  the server refused the request (its message is printed), a local I/O error, or "no" to a question
  2  usage: bad flags or arguments, unreadable input file, no password, --yes missing off a terminal
  3  not logged in, session expired, or wrong user/password: run enclavectl login
  4  server unreachable, or TLS verification against the pinned CA failed
  5  audit verify: the audit hash chain is broken

Session: $XDG_CONFIG_HOME/enclavectl/config.json (default ~/.config/enclavectl/), mode 0600.
Passwords: ENCLAVECTL_PASSWORD (login), ENCLAVECTL_NEW_PASSWORD (user create/update), or a prompt.`;

/** The package version, from the package.json above this file (source or dist/ layout). */
function version(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'ros2-enclave-server' && pkg.version) return pkg.version;
    } catch {
      // not here: one folder up
    }
  }
  return '0.0.0';
}

export function buildProgram(): Command {
  const program = new Command('enclavectl');
  program
    .description('admin CLI of the ROS 2 enclave server')
    .version(version(), '-V, --version')
    // Set before the subcommands are added: they inherit both.
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(str.replace(/^error: /, 'enclavectl: ')) })
    .showSuggestionAfterError()
    .addHelpText('after', HELP_AFTER);
  registerAuth(program);
  registerKeystore(program);
  registerEnclave(program);
  registerRobot(program);
  registerAccess(program);
  registerAudit(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed the message (or the help/version asked for).
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)
        ? EXIT_OK
        : EXIT_USAGE;
    }
    const e = toCtlError(err);
    process.stderr.write(`enclavectl: ${e.message}\n${e.details.map((d) => `  ${d}\n`).join('')}`);
    return e.exitCode;
  }
}

// `enclavectl audit | head` closes the pipe early: that is the reader's choice, not an error worth a stack.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? EXIT_OK);
  throw err;
});

process.exitCode = await main(process.argv);
