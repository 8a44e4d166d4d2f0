/** `audit [list]` and `audit verify` (admin). */
import { InvalidArgumentError, type Command } from 'commander';
import { CtlError, EXIT_AUDIT_BROKEN } from '../errors.js';
import { dash, note, out, printJson, table, time } from '../output.js';
import { integer, withApi, withJson } from './shared.js';

interface Entry {
  id: number;
  at: string;
  actor: string;
  actorKind: string;
  action: string;
  target: string | null;
  result: string;
  grant: string | null;
  details: unknown;
  hash: string;
}
type Verify = { ok: true; entries: number; head: string } | { ok: false; entries: number; brokenAt: number; reason: string };

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** `--since`: an ISO 8601 time, or an age like `90s`, `15m`, `2h`, `7d` (what one usually means). */
export function sinceArg(value: string, now = Date.now()): string {
  const rel = /^(\d+)([smhdw])$/.exec(value.trim());
  if (rel) return new Date(now - Number(rel[1]) * UNITS[rel[2]!]! * 1000).toISOString();
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new InvalidArgumentError('expected an ISO 8601 time (2026-01-31T08:00:00Z) or an age (15m, 2h, 7d)');
  return new Date(t).toISOString();
}

function detailsText(details: unknown): string {
  if (details === null || details === undefined) return '';
  if (typeof details !== 'object') return String(details);
  return Object.entries(details as Record<string, unknown>)
    .map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`)
    .join(' ');
}

export function register(program: Command): void {
  const audit = program
    .command('audit')
    .description('the audit log (admin)')
    .addHelpText('after', '\n"audit [options]" is short for "audit list [options]".');

  withJson(
    audit
      .command('list', { isDefault: true })
      .description('audit entries, newest first')
      .option('--since <time>', 'from this time: ISO 8601, or an age like 15m, 2h, 7d', (v) => sinceArg(v))
      .option('--actor <name>', 'only this user or robot')
      .option('--action <action>', 'only this action; a trailing * matches a prefix (enclave.*)')
      .option('--limit <n>', 'at most this many entries (1-10000, default 100)', integer(1, 10_000)),
  ).action(async (o: { since?: string; actor?: string; action?: string; limit?: number; json?: boolean }) => {
    const res = await withApi((api) =>
      api.call<{ entries: Entry[] }>('GET', 'v1/audit', { query: { since: o.since, actor: o.actor, action: o.action, limit: o.limit } }),
    );
    if (o.json) return printJson(res);
    if (res.entries.length === 0) return note('no audit entries');
    out(
      table(res.entries, [
        { header: 'ID', value: (e) => String(e.id) },
        { header: 'AT', value: (e) => time(e.at) },
        { header: 'ACTOR', value: (e) => (e.actorKind === 'user' ? e.actor : `${e.actorKind}:${e.actor}`) },
        { header: 'ACTION', value: (e) => e.action },
        { header: 'TARGET', value: (e) => dash(e.target) },
        { header: 'RESULT', value: (e) => e.result },
        { header: 'VIA', value: (e) => dash(e.grant) },
        { header: 'DETAILS', value: (e) => detailsText(e.details) },
      ]),
    );
  });

  withJson(audit.command('verify').description('recompute the hash chain; exit 5 when it is broken')).action(async (o: { json?: boolean }) => {
    const res = await withApi((api) => api.call<Verify>('GET', 'v1/audit/verify'));
    if (o.json) printJson(res);
    if (res.ok) {
      if (!o.json) out(`audit chain intact: ${res.entries} entries, head ${res.head}`);
      return;
    }
    throw new CtlError(`audit chain broken at entry ${res.brokenAt}: ${res.reason} (${res.entries} entries checked)`, EXIT_AUDIT_BROKEN);
  });
}
