import { get } from '../api';
import { DataTable, fmtTime, labelText, Labels, Loading, useLoad } from '../components';
import type { Binding, Grant, User } from '../types';
import { enclaveHref } from './keystores';

export function AccessPage() {
  const state = useLoad(async () => {
    const [u, g, b] = await Promise.all([get<{ users: User[] }>('/v1/users'), get<{ grants: Grant[] }>('/v1/grants'), get<{ bindings: Binding[] }>('/v1/bindings')]);
    return { users: u.users, grants: g.grants, bindings: b.bindings };
  });
  const envelope = (g: Grant) =>
    g.permissionsEnvelope ? `publish ${g.permissionsEnvelope.publish.join(', ') || '—'}; subscribe ${g.permissionsEnvelope.subscribe.join(', ') || '—'}` : 'none';
  return (
    <section aria-labelledby="access-title">
      <h1 id="access-title">Access</h1>
      <Loading state={state}>
        {({ users, grants, bindings }) => (
          <>
            <h2>Users</h2>
            <DataTable
              id="users"
              caption="Users"
              rows={users}
              rowKey={(u) => u.name}
              text={(u) => `${u.name} ${u.role}`}
              initialSort={{ key: 'name', dir: 'asc' }}
              columns={[
                { key: 'name', label: 'User', sort: (u) => u.name, cell: (u) => u.name },
                { key: 'role', label: 'Role', sort: (u) => u.role, cell: (u) => u.role },
                { key: 'created', label: 'Created', sort: (u) => u.createdAt, cell: (u) => fmtTime(u.createdAt) },
              ]}
            />
            <h2>Grants</h2>
            <DataTable
              id="grants"
              caption="Grants"
              rows={grants}
              rowKey={(g) => g.id}
              text={(g) => `${g.user} ${g.keystore} ${g.pattern} ${g.capabilities.join(' ')} ${labelText(g.robotSelector)} ${envelope(g)}`}
              initialSort={{ key: 'user', dir: 'asc' }}
              columns={[
                { key: 'user', label: 'User', sort: (g) => g.user, cell: (g) => g.user },
                { key: 'where', label: 'Keystore: pattern', sort: (g) => `${g.keystore}:${g.pattern}`, cell: (g) => <span class="mono">{`${g.keystore}:${g.pattern}`}</span> },
                { key: 'caps', label: 'Capabilities', cell: (g) => g.capabilities.join(', ') },
                { key: 'selector', label: 'Robot selector', cell: (g) => <Labels labels={g.robotSelector} /> },
                { key: 'envelope', label: 'Permissions envelope', cell: (g) => <span class="mono">{envelope(g)}</span> },
                { key: 'id', label: 'Id', cell: (g) => <span class="mono">{g.id}</span> },
              ]}
            />
            <h2>Bindings</h2>
            <DataTable
              id="bindings"
              caption="Bindings"
              rows={bindings}
              rowKey={(b) => b.id}
              text={(b) => `${b.keystore} ${b.enclave} ${b.robot ?? ''} ${labelText(b.selector)} ${b.status} ${b.createdBy}`}
              initialSort={{ key: 'enclave', dir: 'asc' }}
              columns={[
                { key: 'enclave', label: 'Enclave', sort: (b) => `${b.keystore}:${b.enclave}`, cell: (b) => <a href={enclaveHref(b.keystore, b.enclave)}>{`${b.keystore}:${b.enclave}`}</a> },
                { key: 'to', label: 'Robot or selector', sort: (b) => b.robot ?? labelText(b.selector), cell: (b) => (b.robot ? <a href={`#/robots/${encodeURIComponent(b.robot)}`}>{b.robot}</a> : <Labels labels={b.selector} />) },
                { key: 'status', label: 'Status', sort: (b) => b.status, cell: (b) => <span title={b.statusReason}>{b.status}</span> },
                { key: 'via', label: 'Through', cell: (b) => b.grant ?? 'admin' },
                { key: 'by', label: 'Made by', sort: (b) => b.createdBy, cell: (b) => b.createdBy },
              ]}
            />
          </>
        )}
      </Loading>
    </section>
  );
}
