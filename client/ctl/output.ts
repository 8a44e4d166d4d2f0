/**
 * Human output: aligned tables and `key: value` blocks on stdout. `--json` bypasses all of this and prints
 * the API's JSON unchanged, so scripts never depend on the human layout.
 */
export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** Messages about what happened (not data) go to stderr, so `--json`/table output stays parseable. */
export function note(text: string): void {
  process.stderr.write(`${text}\n`);
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

export function table<T>(rows: readonly T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => clean(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const line = (values: string[]): string =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

/** `key: value` lines with the values aligned; undefined values are left out. */
export function keyValues(pairs: [string, string | undefined][]): string {
  const kept = pairs.filter((p): p is [string, string] => p[1] !== undefined);
  const width = Math.max(0, ...kept.map(([k]) => k.length)) + 1;
  return kept.map(([k, v]) => `${`${k}:`.padEnd(width)} ${clean(v)}`).join('\n');
}

/** Server data ends up on a terminal: strip control characters so a name cannot move the cursor. */
function clean(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** `2026-11-27T01:33:38.120Z` → `2026-11-27 01:33:38Z`: same instant, easier on a table. */
export function time(value: string | null | undefined): string {
  if (!value) return '-';
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?Z$/.exec(value);
  return m ? `${m[1]} ${m[2]}Z` : value;
}

export function labels(map: Record<string, string> | null | undefined): string {
  const entries = Object.entries(map ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(',') : '-';
}

export const dash = (v: unknown): string => (v === null || v === undefined || v === '' ? '-' : String(v));
