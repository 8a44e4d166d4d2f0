/**
 * Reading passwords: from a terminal without echo, from an environment variable, or from stdin
 * (`--password-stdin`). The prompt goes to stderr so it never mixes with output a script captures.
 */
import { CtlError, UsageError } from './errors.js';

/** Reads one line from the terminal with echo off (raw mode), handling backspace and Ctrl-C. */
export function promptHidden(question: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) return Promise.reject(new UsageError('no terminal to ask for a password on'));
  // Echo goes off before the prompt shows: anything typed (or pasted) after seeing it stays hidden.
  input.setRawMode(true);
  process.stderr.write(question);
  return new Promise<string>((resolve, reject) => {
    let value = '';
    const finish = (): void => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') {
          finish();
          resolve(value);
          return;
        }
        if (ch === '\u0003') {
          finish();
          reject(new CtlError('cancelled', 130));
          return;
        }
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('');
        else if (ch >= ' ') value += ch;
      }
    };
    input.setEncoding('utf8');
    input.resume();
    input.on('data', onData);
  });
}

/** All of stdin, minus one trailing newline (what `echo pw |` and password managers produce). */
export async function readStdinLine(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export interface PasswordSource {
  envVar: string;
  fromStdin?: boolean;
  prompt: string;
  /** Ask twice on a terminal (new passwords): a typo would lock the account's owner out. */
  confirm?: boolean;
}

export async function readPassword(src: PasswordSource): Promise<string> {
  let password: string;
  if (src.fromStdin) {
    password = await readStdinLine();
  } else if (process.env[src.envVar]) {
    password = process.env[src.envVar]!;
  } else if (process.stdin.isTTY) {
    password = await promptHidden(src.prompt);
    if (src.confirm) {
      const again = await promptHidden('Repeat the password: ');
      if (again !== password) throw new UsageError('the passwords do not match');
    }
  } else {
    throw new UsageError(`no password: set ${src.envVar}, use --password-stdin, or run on a terminal`);
  }
  if (password === '') throw new UsageError('empty password');
  return password;
}
