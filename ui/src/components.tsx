import type { ComponentChildren } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiError } from './api';

export interface Column<T> {
  key: string;
  label: string;
  /** What the column sorts by; a column without it does not sort. */
  sort?: (row: T) => string | number;
  cell: (row: T) => ComponentChildren;
}

/**
 * A list as every page shows one: a filter box (over `text`), sortable column headers (buttons, with
 * aria-sort), and pages of `pageSize` rows.
 */
export function DataTable<T>(props: {
  caption: string;
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  text: (row: T) => string;
  initialSort?: { key: string; dir: 'asc' | 'desc' };
  pageSize?: number;
  /** Extra filter controls, shown next to the text filter. */
  controls?: ComponentChildren;
  id: string;
}) {
  const [filter, setFilter] = useState('');
  const [sort, setSort] = useState(props.initialSort ?? { key: '', dir: 'asc' as const });
  const [page, setPage] = useState(0);
  const pageSize = props.pageSize ?? 25;
  const shown = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const rows = f ? props.rows.filter((r) => props.text(r).toLowerCase().includes(f)) : [...props.rows];
    const col = props.columns.find((c) => c.key === sort.key);
    if (col?.sort) {
      const by = col.sort;
      rows.sort((a, b) => {
        const x = by(a);
        const y = by(b);
        const d = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return sort.dir === 'asc' ? d : -d;
      });
    }
    return rows;
  }, [props.rows, filter, sort]);
  const pages = Math.max(1, Math.ceil(shown.length / pageSize));
  useEffect(() => setPage(0), [filter, props.rows]);
  const at = Math.min(page, pages - 1);
  const slice = shown.slice(at * pageSize, (at + 1) * pageSize);
  return (
    <div class="table-block">
      <div class="controls">
        <label for={`${props.id}-filter`}>Filter</label>
        <input id={`${props.id}-filter`} type="search" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        {props.controls}
      </div>
      <table id={props.id}>
        <caption>{props.caption}</caption>
        <thead>
          <tr>
            {props.columns.map((c) => (
              <th scope="col" key={c.key} aria-sort={sort.key === c.key ? (sort.dir === 'asc' ? 'ascending' : 'descending') : undefined}>
                {c.sort ? (
                  <button
                    type="button"
                    class="sort"
                    onClick={() => setSort({ key: c.key, dir: sort.key === c.key && sort.dir === 'asc' ? 'desc' : 'asc' })}
                  >
                    {c.label}
                    <span aria-hidden="true">{sort.key === c.key ? (sort.dir === 'asc' ? ' ▲' : ' ▼') : ''}</span>
                  </button>
                ) : (
                  c.label
                )}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {slice.length === 0 ? (
            <tr>
              <td colSpan={props.columns.length} class="empty">
                Nothing to show.
              </td>
            </tr>
          ) : (
            slice.map((r) => (
              <tr key={props.rowKey(r)} data-key={props.rowKey(r)}>
                {props.columns.map((c) => (
                  <td key={c.key} data-col={c.key}>
                    {c.cell(r)}
                  </td>
                ))}
              </tr>
            ))
          )}
        </tbody>
      </table>
      <Pager at={at} pages={pages} total={shown.length} setPage={setPage} label={props.caption} />
    </div>
  );
}

export function Pager(props: { at: number; pages: number; total: number; setPage: (n: number) => void; label: string }) {
  return (
    <nav class="pager" aria-label={`${props.label}: pages`}>
      <button type="button" disabled={props.at === 0} onClick={() => props.setPage(props.at - 1)}>
        Previous
      </button>
      <span>
        page {props.at + 1} of {props.pages} ({props.total} {props.total === 1 ? 'row' : 'rows'})
      </span>
      <button type="button" disabled={props.at >= props.pages - 1} onClick={() => props.setPage(props.at + 1)}>
        Next
      </button>
    </nav>
  );
}

/** Loads with `load` (again whenever `deps` change or `reload()` is called); errors are shown, not thrown. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []): { data?: T; error?: string; reload: () => void } {
  const [state, setState] = useState<{ data?: T; error?: string; key?: string }>({});
  const [tick, setTick] = useState(0);
  const key = JSON.stringify(deps);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data, key }),
      (e: unknown) => live && !(e instanceof ApiError && e.status === 401) && setState({ error: messageOf(e), key }),
    );
    return () => {
      live = false;
    };
  }, [key, tick]);
  // An answer for other arguments (the previous page) is never shown under this one; a reload keeps it until replaced.
  const current = state.key === key ? state : {};
  return { data: current.data, error: current.error, reload: () => setTick((t) => t + 1) };
}

export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export function Loading<T>(props: { state: { data?: T; error?: string }; children: (data: T) => ComponentChildren }) {
  if (props.state.error) return <p class="error" role="alert">{props.state.error}</p>;
  if (props.state.data === undefined) return <p aria-busy="true">Loading…</p>;
  return <>{props.children(props.state.data)}</>;
}

export function Labels(props: { labels: Record<string, string> | undefined }) {
  const entries = Object.entries(props.labels ?? {});
  if (entries.length === 0) return <span class="muted">none</span>;
  return (
    <span class="labels">
      {entries.map(([k, v]) => (
        <span class="label" key={k}>
          {k}={v}
        </span>
      ))}
    </span>
  );
}

export const labelText = (labels: Record<string, string> | undefined): string =>
  Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

/** `2026-12-03 20:33:04Z`: the same form enclavectl prints. */
export const fmtTime = (iso: string | null | undefined): string => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—');

const DAY = 86_400_000;
/** "in 12 d", "3 min ago": from now, for expiries and last contact. */
export function relative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const ms = Date.parse(iso) - now;
  const a = Math.abs(ms);
  const text = a >= 2 * DAY ? `${Math.round(a / DAY)} d` : a >= 2 * 3_600_000 ? `${Math.round(a / 3_600_000)} h` : a >= 120_000 ? `${Math.round(a / 60_000)} min` : `${Math.round(a / 1000)} s`;
  return ms >= 0 ? `in ${text}` : `${text} ago`;
}

export const daysLeft = (iso: string, now = Date.now()): number => Math.floor((Date.parse(iso) - now) / DAY);

/** A message area that screen readers announce. */
export function Notice(props: { notice: { kind: 'ok' | 'error'; text: string } | null }) {
  return (
    <p class={props.notice ? `notice ${props.notice.kind}` : 'notice'} role="status" aria-live="polite">
      {props.notice?.text ?? ''}
    </p>
  );
}

export type NoticeValue = { kind: 'ok' | 'error'; text: string } | null;

/** An action's outcome as a notice: `run(what, then)` shows what `what` resolves with, or its error. */
export function useAction(): { notice: NoticeValue; setNotice: (n: NoticeValue) => void; run: (what: () => Promise<string>, then?: () => void) => Promise<void> } {
  const [notice, setNotice] = useState<NoticeValue>(null);
  const run = async (what: () => Promise<string>, then?: () => void) => {
    try {
      setNotice({ kind: 'ok', text: await what() });
      then?.();
    } catch (e) {
      setNotice({ kind: 'error', text: messageOf(e) });
    }
  };
  return { notice, setNotice, run };
}

/** A detail page's head: where it sits (links back), its title, and the outcome of its last action. */
export function PageHead(props: { id: string; crumbs: [string, string][]; here: string; title: ComponentChildren; notice: NoticeValue }) {
  return (
    <>
      <p class="crumbs">
        {props.crumbs.map(([href, text]) => (
          <span key={href}>
            <a href={href}>{text}</a> /{' '}
          </span>
        ))}
        {props.here}
      </p>
      <h1 id={props.id}>{props.title}</h1>
      <Notice notice={props.notice} />
    </>
  );
}
