import { get } from '../api';
import { DataTable, daysLeft, fmtTime, Loading, useLoad } from '../components';
import type { EnclaveSummary, Keystore } from '../types';
import { enclaveHref } from './keystores';

interface Expiring {
  kind: 'enclave' | 'CA';
  keystore: string;
  name: string;
  notAfter: string;
  href: string;
}

const WEEK = 7 * 86_400_000;
const WEEKS = 53;
const URGENT_DAYS = 30;

/** Every certificate the caller can see that still counts: active enclaves, and each keystore's CA(s). */
async function loadExpiring(): Promise<Expiring[]> {
  const { keystores } = await get<{ keystores: Keystore[] }>('/v1/keystores');
  const lists = await Promise.all(keystores.map((k) => get<{ enclaves: EnclaveSummary[] }>(`/v1/keystores/${encodeURIComponent(k.name)}/enclaves`)));
  const out: Expiring[] = [];
  keystores.forEach((k, i) => {
    const href = `#/keystores/${encodeURIComponent(k.name)}`;
    out.push({ kind: 'CA', keystore: k.name, name: k.sharedCa ? `CA ${k.identityCa.subject}` : `identity CA ${k.identityCa.subject}`, notAfter: k.identityCa.notAfter, href });
    if (!k.sharedCa) out.push({ kind: 'CA', keystore: k.name, name: `permissions CA ${k.permissionsCa.subject}`, notAfter: k.permissionsCa.notAfter, href });
    for (const e of lists[i]!.enclaves) {
      if (e.status === 'active') out.push({ kind: 'enclave', keystore: k.name, name: e.path, notAfter: e.notAfter, href: enclaveHref(k.name, e.path) });
    }
  });
  return out;
}

/** Weekly bars over the next 12 months, stacked enclaves + CAs; drawn here as plain SVG (no chart library). */
function HorizonChart(props: { items: Expiring[]; now: number }) {
  const weeks = Array.from({ length: WEEKS }, () => ({ enclave: 0, CA: 0 }));
  let overdue = 0;
  for (const it of props.items) {
    const w = Math.floor((Date.parse(it.notAfter) - props.now) / WEEK);
    if (w < 0) overdue++;
    else if (w < WEEKS) weeks[w]![it.kind]++;
  }
  const max = Math.max(1, ...weeks.map((w) => w.enclave + w.CA));
  const W = 760;
  const H = 220;
  const left = 36;
  const bottom = 28;
  const top = 10;
  const plotH = H - bottom - top;
  const bw = (W - left - 8) / WEEKS;
  const y = (n: number) => top + plotH - (n / max) * plotH;
  const months: { x: number; label: string }[] = [];
  for (let m = 0; m <= 12; m++) {
    const d = new Date(props.now);
    const at = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + m, 1);
    if (at < props.now || at >= props.now + WEEKS * WEEK) continue;
    months.push({ x: left + ((at - props.now) / WEEK) * bw, label: new Date(at).toLocaleString('en', { month: 'short', timeZone: 'UTC' }) });
  }
  const total = weeks.reduce((n, w) => n + w.enclave + w.CA, 0);
  const urgentX = left + (URGENT_DAYS / 7) * bw;
  return (
    <figure class="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby="horizon-title horizon-desc" id="horizon-chart">
        <title id="horizon-title">Certificates expiring per week over the next 12 months</title>
        <desc id="horizon-desc">
          {total} certificates expire within 53 weeks, at most {max} in one week{overdue ? `; ${overdue} already expired` : ''}.
        </desc>
        <rect class="urgent-zone" x={left} y={top} width={urgentX - left} height={plotH} />
        <line class="axis" x1={left} y1={top + plotH} x2={W - 8} y2={top + plotH} />
        <line class="axis" x1={left} y1={top} x2={left} y2={top + plotH} />
        <text class="tick" x={left - 6} y={top + 4} text-anchor="end">
          {max}
        </text>
        <text class="tick" x={left - 6} y={top + plotH} text-anchor="end">
          0
        </text>
        {weeks.map((w, i) => {
          const x = left + i * bw + 1;
          const e = w.enclave;
          const c = w.CA;
          return (
            <g key={i} data-week={i}>
              {e > 0 && <rect class="bar-enclave" x={x} y={y(e)} width={bw - 2} height={top + plotH - y(e)} />}
              {c > 0 && <rect class="bar-ca" x={x} y={y(e + c)} width={bw - 2} height={y(e) - y(e + c)} />}
              {e + c > 0 && <title>{`week ${i + 1}: ${e} enclave(s), ${c} CA(s)`}</title>}
            </g>
          );
        })}
        {months.map((m) => (
          <text key={m.label + m.x} class="tick" x={m.x} y={H - 8} text-anchor="middle">
            {m.label}
          </text>
        ))}
      </svg>
      <figcaption>
        <span class="key key-enclave" aria-hidden="true" /> enclaves <span class="key key-ca" aria-hidden="true" /> CAs <span class="key key-urgent" aria-hidden="true" /> under {URGENT_DAYS} days
      </figcaption>
    </figure>
  );
}

export function ExpiryPage() {
  const state = useLoad(loadExpiring);
  const now = Date.now();
  return (
    <section aria-labelledby="expiry-title">
      <h1 id="expiry-title">Expiry horizon</h1>
      <Loading state={state}>
        {(items) => {
          // Under 30 days (expired ones included) first, soonest first; then the rest, soonest first.
          const rank = (x: Expiring) => (daysLeft(x.notAfter, now) < URGENT_DAYS ? 0 : 1);
          const ordered = [...items].sort((a, b) => rank(a) - rank(b) || a.notAfter.localeCompare(b.notAfter));
          return (
            <>
              <HorizonChart items={items} now={now} />
              <DataTable
                id="expiring"
                caption={`Certificates by expiry (${ordered.filter((x) => rank(x) === 0).length} under ${URGENT_DAYS} days, listed first)`}
                rows={ordered}
                rowKey={(x) => `${x.kind}:${x.keystore}:${x.name}`}
                text={(x) => `${x.kind} ${x.keystore} ${x.name}`}
                columns={[
                  { key: 'days', label: 'Days left', sort: (x) => Date.parse(x.notAfter), cell: (x) => <span class={daysLeft(x.notAfter, now) < URGENT_DAYS ? 'urgent' : ''}>{daysLeft(x.notAfter, now)}</span> },
                  { key: 'kind', label: 'Kind', sort: (x) => x.kind, cell: (x) => x.kind },
                  { key: 'keystore', label: 'Keystore', sort: (x) => x.keystore, cell: (x) => x.keystore },
                  { key: 'name', label: 'Certificate', sort: (x) => x.name, cell: (x) => <a href={x.href}>{x.name}</a> },
                  { key: 'expires', label: 'Expires', sort: (x) => x.notAfter, cell: (x) => fmtTime(x.notAfter) },
                ]}
              />
            </>
          );
        }}
      </Loading>
    </section>
  );
}
