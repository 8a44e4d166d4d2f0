/**
 * Where `enclavectl` keeps its session: `$XDG_CONFIG_HOME/enclavectl/config.json` (default
 * `~/.config/enclavectl/`). The file holds a bearer token, so the folder is 0700 and the file 0600, and
 * it is replaced atomically (write a sibling, then rename) so a crash never leaves half a file.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CtlError, EXIT_AUTH, EXIT_REFUSED } from './errors.js';

export interface Config {
  /** Server base URL without a trailing slash, e.g. `https://enclaves.lan:8443`. */
  server: string;
  /** The pinned CA (PEM), copied so the session survives the original file moving; absent for loopback http. */
  ca?: string;
  user: string;
  token?: string;
  expiresAt?: string;
}

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  // The XDG spec says relative values are invalid and must be ignored.
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.config');
  return path.join(base, 'enclavectl');
}

export const configFile = (dir = configDir()): string => path.join(dir, 'config.json');

export function loadConfig(dir = configDir()): Config | undefined {
  const file = configFile(dir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CtlError(`cannot read ${file}: ${(err as Error).message}`, EXIT_REFUSED);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CtlError(`${file} is not valid JSON: run enclavectl login`, EXIT_AUTH);
  }
  const c = value as Partial<Config> | null;
  if (!c || typeof c.server !== 'string' || typeof c.user !== 'string') {
    throw new CtlError(`${file} is incomplete: run enclavectl login`, EXIT_AUTH);
  }
  return {
    server: c.server,
    user: c.user,
    ...(typeof c.ca === 'string' ? { ca: c.ca } : {}),
    ...(typeof c.token === 'string' ? { token: c.token } : {}),
    ...(typeof c.expiresAt === 'string' ? { expiresAt: c.expiresAt } : {}),
  };
}

export function saveConfig(config: Config, dir = configDir()): string {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // mkdir leaves an existing folder's mode alone (or the umask may have widened a new one).
  fs.chmodSync(dir, 0o700);
  const file = configFile(dir);
  const tmp = path.join(dir, `.config.json.${process.pid}.${Date.now()}`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeFileSync(fd, `${JSON.stringify(config, null, 2)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return file;
}

/** The session every command other than `login` needs; a clear pointer to `login` when there is none. */
export function requireSession(dir = configDir()): Config & { token: string } {
  const config = loadConfig(dir);
  if (!config) throw new CtlError('not logged in: run enclavectl login --server URL --ca FILE --user NAME', EXIT_AUTH);
  if (!config.token) throw new CtlError(`logged out of ${config.server}: run enclavectl login`, EXIT_AUTH);
  return { ...config, token: config.token };
}
