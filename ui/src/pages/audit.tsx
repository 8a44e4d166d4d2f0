import { useState } from 'preact/hooks';
import { get } from '../api';
import { DataTable, fmtTime, Loading, useLoad } from '../components';
import type { AuditEntry, ChainVerdict } from '../types';

interface Filters {
  actor: string;
  action: string;
  target: string;
  result: string;
  since: string;
  until: string;
}
const EMPTY: Filters = { actor: '', action: '', target: '', result: '', since: '', until: '' };
/** The server keeps at most this many per answer; the console pages through them itself. */
const FETCH_LIMIT = 2000;

type Verdict = ChainVerdict;

/** `datetime-local` is the browser's local time; the API speaks UTC. */
const toIso = (local: string): string | undefined => (local ? new Date(local).toISOString() : undefined);

export function AuditPage() {
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const state = useLoad(async () => {
    const q = new URLSearchParams({ limit: String(FETCH_LIMIT) });
    if (filters.actor) q.set('actor', filters.actor);
    if (filters.action) q.set('action', filters.action);
    if (filters.result) q.set('result', filters.result);
    if (filters.target) q.set('target', filters.target);
    const since = toIso(filters.since);
    if (since) q.set('since', since);
    const until = toIso(filters.until);
    if (until) q.set('until', until);
    const [{ entries }, verdict] = await Promise.all([get<{ entries: AuditEntry[] }>(`/v1/audit?${q}`), get<Verdict>('/v1/audit/verify')]);
    return { verdict, entries, truncated: entries.length === FETCH_LIMIT };
  }, [filters]);
  const field = (key: keyof Filters, label: string, type = 'text') => (
    <>
      <label for={`audit-${key}`}>{label}</label>
      <input id={`audit-${key}`} type={type} value={draft[key]} onInput={(e) => setDraft({ ...draft, [key]: (e.target as HTMLInputElement).value })} />
    </>
  );
  return (
    <section aria-labelledby="audit-title">
      <h1 id="audit-title">Audit</h1>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setFilters(draft);
        }}
      >
        {field('actor', 'Actor')}
        {field('action', 'Action (ends with * for a prefix)')}
        {field('target', 'Target contains')}
        <label for="audit-result">Result</label>
        <select id="audit-result" value={draft.result} onChange={(e) => setDraft({ ...draft, result: (e.target as HTMLSelectElement).value })}>
          <option value="">any</option>
          <option value="success">success</option>
          <option value="failure">failure</option>
          <option value="denied">denied</option>
        </select>
        {field('since', 'From', 'datetime-local')}
        {field('until', 'Until', 'datetime-local')}
        <button type="submit">Apply filters</button>
      </form>
      <Loading state={state}>
        {({ verdict, entries, truncated }) => (
          <>
            <p class={verdict.ok ? 'chain ok' : 'chain broken'} id="audit-chain" role="status">
              {verdict.ok
                ? `Hash chain verified: ${verdict.entries} entries, head ${verdict.head.slice(0, 16)}…`
                : `Hash chain BROKEN at entry ${verdict.brokenAt} (${verdict.reason}); ${verdict.entries} entries checked.`}
            </p>
            {truncated && <p class="muted">Showing the newest {FETCH_LIMIT} matching entries: narrow the filters to see older ones.</p>}
            <DataTable
              id="audit"
              caption="Audit entries, newest first"
              rows={entries}
              rowKey={(e) => String(e.id)}
              text={(e) => `${e.actor} ${e.action} ${e.target ?? ''} ${e.result} ${JSON.stringify(e.details ?? {})}`}
              initialSort={{ key: 'id', dir: 'desc' }}
              pageSize={50}
              columns={[
                { key: 'id', label: '#', sort: (e) => e.id, cell: (e) => e.id },
                { key: 'at', label: 'Time (UTC)', sort: (e) => e.at, cell: (e) => fmtTime(e.at) },
                { key: 'actor', label: 'Actor', sort: (e) => e.actor, cell: (e) => `${e.actor} (${e.actorKind})` },
                { key: 'action', label: 'Action', sort: (e) => e.action, cell: (e) => e.action },
                { key: 'target', label: 'Target', sort: (e) => e.target ?? '', cell: (e) => <span class="mono">{e.target ?? '—'}</span> },
                { key: 'result', label: 'Result', sort: (e) => e.result, cell: (e) => <span class={`result-${e.result}`}>{e.result}</span> },
                { key: 'grant', label: 'Allowed by', cell: (e) => e.grant ?? '—' },
                { key: 'details', label: 'Details', cell: (e) => (e.details ? <span class="mono small">{JSON.stringify(e.details)}</span> : '—') },
              ]}
            />
          </>
        )}
      </Loading>
    </section>
  );
}
