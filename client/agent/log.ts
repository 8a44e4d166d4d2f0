/**
 * One line per event on stderr. Under systemd (JOURNAL_STREAM set) each line carries a `<N>` syslog
 * priority prefix so journald records the level; on a terminal it reads `enclave-agent: warning: ...`.
 * Callers never pass keys, tokens or file contents here.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';

const PRIORITY: Record<Level, number> = { debug: 7, info: 6, warn: 4, error: 3 };
const LABEL: Record<Level, string> = { debug: 'debug: ', info: '', warn: 'warning: ', error: 'error: ' };

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function createLogger(opts: { verbose?: boolean; journal?: boolean } = {}): Logger {
  const journal = opts.journal ?? process.env.JOURNAL_STREAM !== undefined;
  const line = (level: Level, msg: string): void => {
    if (level === 'debug' && !opts.verbose) return;
    const text = msg.replace(/[\r\n]+/g, ' ');
    process.stderr.write(journal ? `<${PRIORITY[level]}>${text}\n` : `enclave-agent: ${LABEL[level]}${text}\n`);
  };
  return {
    debug: (m) => line('debug', m),
    info: (m) => line('info', m),
    warn: (m) => line('warn', m),
    error: (m) => line('error', m),
  };
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
