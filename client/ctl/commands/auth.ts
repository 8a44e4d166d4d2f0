/** `login` and `logout`: the only commands that write the session file. */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import type { Command } from 'commander';
import { Api } from '../api.js';
import { configDir, loadConfig, saveConfig, type Config } from '../config.js';
import { UsageError } from '../errors.js';
import { out, time } from '../output.js';
import { readPassword } from '../prompt.js';

/** Reads and checks the CA file; only the certificate blocks are kept (a bundle may carry comments). */
function readCa(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`--ca ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new UsageError(`--ca ${file}: no PEM certificate in it`);
  for (const b of blocks) {
    try {
      new X509Certificate(b);
    } catch {
      throw new UsageError(`--ca ${file}: not a valid PEM certificate`);
    }
  }
  return `${blocks.join('\n')}\n`;
}

export function register(program: Command): void {
  program
    .command('login')
    .description('log in and save the server URL, its pinned CA and the session token')
    .option('--server <url>', 'server URL, e.g. https://enclaves.lan:8443 (default: the saved one)')
    .option('--ca <file>', "the server's CA certificate (PEM), pinned as the only trusted root (default: the saved one)")
    .option('--user <name>', 'user name (default: the saved one)')
    .option('--password-stdin', 'read the password from stdin instead of ENCLAVECTL_PASSWORD or a prompt')
    .action(async (opts: { server?: string; ca?: string; user?: string; passwordStdin?: boolean }) => {
      const saved = loadConfig();
      const server = (opts.server ?? saved?.server)?.replace(/\/+$/, '');
      if (!server) throw new UsageError('--server URL is required for the first login');
      const user = opts.user ?? saved?.user;
      if (!user) throw new UsageError('--user NAME is required for the first login');
      // A saved CA belongs to the saved server only: pinning it for another URL would be a silent surprise.
      const ca = opts.ca !== undefined ? readCa(opts.ca) : saved?.server === server ? saved.ca : undefined;
      const api = new Api(server, ca);
      try {
        const password = await readPassword({ envVar: 'ENCLAVECTL_PASSWORD', fromStdin: opts.passwordStdin, prompt: `Password for ${user}: ` });
        const session = await api.call<{ token: string; expiresAt: string }>('POST', 'v1/auth/login', { json: { username: user, password } });
        const config: Config = { server, user, token: session.token, expiresAt: session.expiresAt, ...(ca ? { ca } : {}) };
        saveConfig(config);
        out(`logged in to ${server} as ${user} (session until ${time(session.expiresAt)})`);
      } finally {
        api.close();
      }
    });

  program
    .command('logout')
    .description('forget the session token (the server URL, CA and user name are kept for the next login)')
    .action(() => {
      const saved = loadConfig();
      if (!saved?.token) {
        out('not logged in');
        return;
      }
      const { token: _token, expiresAt: _expiresAt, ...rest } = saved;
      saveConfig(rest);
      out(`logged out of ${saved.server} (session removed from ${configDir()})`);
    });
}
