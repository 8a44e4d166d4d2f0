import type { ComponentChildren } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import { api, currentSession, get } from '../api';
import { DataTable, daysLeft, fmtTime, Loading, PageHead, Pager, useAction, useLoad } from '../components';
import type { EnclaveSummary, Keystore } from '../types';

export const enclaveHref = (ks: string, path: string): string => `#/keystores/${encodeURIComponent(ks)}/enclaves${path}`;

export function KeystoresPage() {
  const state = useLoad(async () => {
    const { keystores } = await get<{ keystores: Keystore[] }>('/v1/keystores');
    const counts = await Promise.all(keystores.map((k) => get<{ enclaves: EnclaveSummary[] }>(`/v1/keystores/${encodeURIComponent(k.name)}/enclaves`)));
    return keystores.map((k, i) => ({ ...k, enclaves: counts[i]!.enclaves.length }));
  });
  return (
    <section aria-labelledby="ks-title">
      <h1 id="ks-title">Keystores and enclaves</h1>
      <Loading state={state}>
        {(rows) => (
          <DataTable
            id="keystores"
            caption="Keystores you can see"
            rows={rows}
            rowKey={(k) => k.name}
            text={(k) => `${k.name} ${k.origin} ${k.identityCa.subject}`}
            initialSort={{ key: 'name', dir: 'asc' }}
            columns={[
              { key: 'name', label: 'Keystore', sort: (k) => k.name, cell: (k) => <a href={`#/keystores/${encodeURIComponent(k.name)}`}>{k.name}</a> },
              { key: 'domain', label: 'Domain', sort: (k) => k.domainId, cell: (k) => k.domainId },
              { key: 'origin', label: 'Origin', sort: (k) => k.origin, cell: (k) => `${k.origin}${k.importOnly ? ' (import only)' : ''}` },
              { key: 'enclaves', label: 'Enclaves you may read', sort: (k) => k.enclaves, cell: (k) => k.enclaves },
              { key: 'ca', label: 'CA expires', sort: (k) => k.identityCa.notAfter, cell: (k) => fmtTime(k.identityCa.notAfter) },
              { key: 'revocations', label: 'Revocations', sort: (k) => k.revocations, cell: (k) => k.revocations },
            ]}
          />
        )}
      </Loading>
    </section>
  );
}

interface TreeNode {
  name: string;
  children: Map<string, TreeNode>;
  enclave?: EnclaveSummary;
}

function treeOf(enclaves: EnclaveSummary[]): TreeNode {
  const root: TreeNode = { name: '/', children: new Map() };
  for (const e of enclaves) {
    let node = root;
    for (const seg of e.path.split('/').filter(Boolean)) {
      let next = node.children.get(seg);
      if (!next) node.children.set(seg, (next = { name: seg, children: new Map() }));
      node = next;
    }
    node.enclave = e;
  }
  return root;
}

function Tree(props: { node: TreeNode; ks: string }): ComponentChildren {
  const kids = [...props.node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
  if (kids.length === 0) return null;
  return (
    <ul>
      {kids.map((n) => (
        <li key={n.name}>
          {n.enclave ? (
            <span class="leaf">
              <a href={enclaveHref(props.ks, n.enclave.path)}>{n.name}</a> <span class={`badge status-${n.enclave.status}`}>{n.enclave.status}</span>{' '}
              <span class="muted">
                expires {fmtTime(n.enclave.notAfter)} ({daysLeft(n.enclave.notAfter)} d), permissions: {n.enclave.permissionsSource}
              </span>
            </span>
          ) : (
            <span class="branch">{n.name}/</span>
          )}
          <Tree node={n} ks={props.ks} />
        </li>
      ))}
    </ul>
  );
}

const TREE_PAGE = 50;

export function KeystorePage(props: { ks: string }) {
  const session = currentSession();
  const mayCreate = session?.role === 'admin' || !!session?.grants.some((g) => g.keystore === props.ks && g.capabilities.includes('manage'));
  const [filter, setFilter] = useState('');
  const [status, setStatus] = useState('');
  const [page, setPage] = useState(0);
  const [newPath, setNewPath] = useState('');
  const { notice, run } = useAction();
  const state = useLoad(async () => {
    const ks = encodeURIComponent(props.ks);
    const [keystore, list] = await Promise.all([get<Keystore>(`/v1/keystores/${ks}`), get<{ enclaves: EnclaveSummary[] }>(`/v1/keystores/${ks}/enclaves`)]);
    return { keystore, enclaves: list.enclaves };
  }, [props.ks]);
  const shown = useMemo(() => {
    const f = filter.trim().toLowerCase();
    return (state.data?.enclaves ?? [])
      .filter((e) => (!f || e.path.toLowerCase().includes(f)) && (!status || e.status === status))
      .sort((a, b) => a.path.localeCompare(b.path));
  }, [state.data, filter, status]);
  const pages = Math.max(1, Math.ceil(shown.length / TREE_PAGE));
  const at = Math.min(page, pages - 1);

  const create = (e: Event) => {
    e.preventDefault();
    void run(async () => {
      const made = await api<EnclaveSummary>('POST', `/v1/keystores/${encodeURIComponent(props.ks)}/enclaves`, { path: newPath.trim() });
      setNewPath('');
      return `Created ${made.path}.`;
    }, state.reload);
  };

  return (
    <section aria-labelledby="keystore-title">
      <PageHead id="keystore-title" crumbs={[['#/keystores', 'Keystores']]} here={props.ks} title={`Keystore ${props.ks}`} notice={notice} />
      <Loading state={state}>
        {({ keystore }) => (
          <>
            <dl class="facts">
              <dt>Domain id</dt>
              <dd>{keystore.domainId}</dd>
              <dt>Identity CA</dt>
              <dd>
                {keystore.identityCa.subject}, until {fmtTime(keystore.identityCa.notAfter)}
              </dd>
              {!keystore.sharedCa && (
                <>
                  <dt>Permissions CA</dt>
                  <dd>
                    {keystore.permissionsCa.subject}, until {fmtTime(keystore.permissionsCa.notAfter)}
                  </dd>
                </>
              )}
              <dt>Identity CA SHA-256</dt>
              <dd class="mono">{keystore.identityCa.fingerprintSha256}</dd>
              <dt>Enclave validity</dt>
              <dd>{keystore.enclaveValidityDays} days</dd>
            </dl>
            <h2>Enclaves</h2>
            <div class="controls">
              <label for="tree-filter">Filter paths</label>
              <input id="tree-filter" type="search" value={filter} onInput={(e) => (setFilter((e.target as HTMLInputElement).value), setPage(0))} />
              <label for="tree-status">Status</label>
              <select id="tree-status" value={status} onChange={(e) => (setStatus((e.target as HTMLSelectElement).value), setPage(0))}>
                <option value="">any</option>
                <option value="active">active</option>
                <option value="revoked">revoked</option>
              </select>
            </div>
            <div class="tree" id="enclave-tree" aria-label={`Enclaves of ${props.ks}`} role="group">
              {shown.length === 0 ? <p class="empty">Nothing to show.</p> : <Tree node={treeOf(shown.slice(at * TREE_PAGE, (at + 1) * TREE_PAGE))} ks={props.ks} />}
            </div>
            <Pager at={at} pages={pages} total={shown.length} setPage={setPage} label="Enclaves" />
            {mayCreate && !keystore.importOnly && (
              <form class="inline" onSubmit={create}>
                <label for="new-enclave">New enclave path</label>
                <input id="new-enclave" type="text" placeholder="/robot/node" required value={newPath} onInput={(e) => setNewPath((e.target as HTMLInputElement).value)} />
                <button type="submit">Create enclave</button>
              </form>
            )}
          </>
        )}
      </Loading>
    </section>
  );
}
