/**
 * Commands that delete, revoke or unbind act only when confirmed: `--yes`, or "y" typed at a question on
 * a terminal. Off a terminal without `--yes` they stop before anything is sent, so a script never
 * destroys by accident and a person at a terminal need not remember the flag.
 */
import readline from 'node:readline';
import type { Command } from 'commander';
import { CtlError, EXIT_REFUSED, UsageError } from './errors.js';

export const withYes = (cmd: Command): Command => cmd.option('--yes', 'do it without asking (needed when not on a terminal)');

/** `what` says what will happen, as a clause: "deleting robot r1 ends its access at once". */
export async function confirm(what: string, yes: boolean | undefined): Promise<void> {
  if (yes) return;
  // Both ends must be a terminal: a question on a redirected stderr would wait for an answer nobody sees.
  if (!process.stdin.isTTY || !process.stderr.isTTY) throw new UsageError(`${what}: add --yes to confirm`);
  const answer = await ask(`${what}. Go ahead? [y/N] `);
  if (!/^y(es)?$/i.test(answer.trim())) throw new CtlError('cancelled: nothing was changed', EXIT_REFUSED);
}

function ask(question: string): Promise<string> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  return new Promise((resolve, reject) => {
    let answered = false;
    rl.on('SIGINT', () => {
      answered = true;
      rl.close();
      process.stderr.write('\n');
      reject(new CtlError('cancelled', 130));
    });
    // Ctrl-D (end of input) is a "no".
    rl.on('close', () => {
      if (!answered) resolve('');
    });
    rl.question(question, (a) => {
      answered = true;
      rl.close();
      resolve(a);
    });
  });
}
