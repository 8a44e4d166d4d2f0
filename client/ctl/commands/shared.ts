/** What every command module needs: the logged-in API, argument parsers, common flags. */
import { InvalidArgumentError, type Command } from 'commander';
import { Api } from '../api.js';
import { requireSession } from '../config.js';

/** Runs `fn` with an API client for the saved session, closing its connections afterwards. */
export async function withApi<T>(fn: (api: Api) => Promise<T>): Promise<T> {
  const session = requireSession();
  const api = new Api(session.server, session.ca, session.token, session.expiresAt);
  try {
    return await fn(api);
  } finally {
    api.close();
  }
}

export function integer(min: number, max: number) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim())) throw new InvalidArgumentError('expected a whole number');
    const n = Number(value);
    if (n < min || n > max) throw new InvalidArgumentError(`expected a number from ${min} to ${max}`);
    return n;
  };
}

/** Repeatable `k=v` (`--label a=b --label c=d`, or `--label a=b,c=d`), collected into one map. */
export function collectPairs(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const map = { ...(previous ?? {}) };
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`expected key=value, not ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim();
    if (Object.hasOwn(map, key)) throw new InvalidArgumentError(`${key} given twice`);
    map[key] = part.slice(eq + 1).trim();
  }
  return map;
}

/** Positional `k=v` arguments (not options) into a map, with the same rules as `collectPairs`. */
export function pairsOf(values: string[]): Record<string, string> {
  let map: Record<string, string> = {};
  for (const v of values) map = collectPairs(v, map);
  return map;
}

export const withJson = (cmd: Command): Command => cmd.option('--json', 'print the API JSON instead of a table');

/** `--progress` forces the bar (also onto a pipe), `--no-progress` hides it; default: only on a terminal. */
export const withProgress = (cmd: Command): Command =>
  cmd.option('--progress', 'show progress on stderr even when it is not a terminal').option('--no-progress', 'never show progress');

/** `--identity-mode` and `enclave set-mode`: checked here so a typo is a usage error (exit 2), not a 422. */
export function identityModeArg(value: string): 'shared' | 'per-robot' {
  if (value !== 'shared' && value !== 'per-robot') throw new InvalidArgumentError('expected shared or per-robot');
  return value;
}
