import { useState } from 'preact/hooks';
import { get } from '../api';
import { DataTable, fmtTime, labelText, Labels, Loading, relative, useLoad, type Column } from '../components';
import type { Fleet, FleetRobot, FleetState } from '../types';

export const STATE_TEXT: Record<FleetState, string> = {
  'up-to-date': 'up to date',
  behind: 'behind',
  silent: 'silent',
  'never-reported': 'never reported',
  'not-enrolled': 'not enrolled',
};

export function StateBadge(props: { state: FleetState }) {
  return <span class={`badge state-${props.state}`}>{STATE_TEXT[props.state]}</span>;
}

const skew = (ms: number | null): string => (ms === null ? '—' : Math.abs(ms) >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`);

export function FleetPage() {
  const [silentMinutes, setSilentMinutes] = useState(10);
  const [stateFilter, setStateFilter] = useState<FleetState | ''>('');
  const fleet = useLoad(() => get<Fleet>(`/v1/fleet?silentMinutes=${silentMinutes}`), [silentMinutes]);
  const columns: Column<FleetRobot>[] = [
    { key: 'name', label: 'Robot', sort: (r) => r.name, cell: (r) => <a href={`#/robots/${encodeURIComponent(r.name)}`}>{r.name}</a> },
    { key: 'labels', label: 'Labels', sort: (r) => labelText(r.labels), cell: (r) => <Labels labels={r.labels} /> },
    { key: 'state', label: 'Revision', sort: (r) => r.state, cell: (r) => <StateBadge state={r.state} /> },
    { key: 'enrolled', label: 'Enrolled', sort: (r) => r.enrolledAt ?? '', cell: (r) => fmtTime(r.enrolledAt) },
    { key: 'seen', label: 'Last seen', sort: (r) => r.lastSeenAt ?? '', cell: (r) => (r.lastSeenAt ? <time dateTime={r.lastSeenAt} title={fmtTime(r.lastSeenAt)}>{relative(r.lastSeenAt)}</time> : '—') },
    { key: 'agent', label: 'Agent', sort: (r) => r.agentVersion ?? '', cell: (r) => r.agentVersion ?? '—' },
    { key: 'skew', label: 'Clock skew', sort: (r) => Math.abs(r.clockSkewMs ?? 0), cell: (r) => skew(r.clockSkewMs) },
    { key: 'fs', label: 'Filesystem', sort: (r) => r.filesystem ?? '', cell: (r) => r.filesystem ?? '—' },
  ];
  return (
    <section aria-labelledby="fleet-title">
      <h1 id="fleet-title">Fleet</h1>
      <Loading state={fleet}>
        {(f) => (
          <>
            <ul class="counts" aria-label="Robots by state">
              {(Object.keys(STATE_TEXT) as FleetState[]).map((s) => (
                <li key={s}>
                  <StateBadge state={s} /> <strong data-count={s}>{f.counts[s]}</strong>
                </li>
              ))}
            </ul>
            <DataTable
              id="fleet"
              caption={`Robots (silent: no contact for more than ${f.silentMinutes} min)`}
              rows={stateFilter ? f.robots.filter((r) => r.state === stateFilter) : f.robots}
              columns={columns}
              rowKey={(r) => r.name}
              text={(r) => `${r.name} ${labelText(r.labels)} ${r.agentVersion ?? ''} ${r.filesystem ?? ''}`}
              initialSort={{ key: 'name', dir: 'asc' }}
              controls={
                <>
                  <label for="fleet-state">State</label>
                  <select id="fleet-state" value={stateFilter} onChange={(e) => setStateFilter((e.target as HTMLSelectElement).value as FleetState | '')}>
                    <option value="">any</option>
                    {(Object.keys(STATE_TEXT) as FleetState[]).map((s) => (
                      <option key={s} value={s}>
                        {STATE_TEXT[s]}
                      </option>
                    ))}
                  </select>
                  <label for="fleet-silent">Silent after (min)</label>
                  <input
                    id="fleet-silent"
                    type="number"
                    min={1}
                    max={10080}
                    value={silentMinutes}
                    onChange={(e) => {
                      const n = Number((e.target as HTMLInputElement).value);
                      if (Number.isInteger(n) && n >= 1 && n <= 10080) setSilentMinutes(n);
                    }}
                  />
                  <button type="button" onClick={fleet.reload}>
                    Refresh
                  </button>
                </>
              }
            />
          </>
        )}
      </Loading>
    </section>
  );
}
