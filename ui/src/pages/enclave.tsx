import { useState } from 'preact/hooks';
import { api, apiRaw, enclaveUrl, get, may } from '../api';
import { DataTable, daysLeft, fmtTime, Labels, Loading, messageOf, PageHead, useAction, useLoad } from '../components';
import { readPermissions } from '../permissions';
import type { Binding, Enclave } from '../types';

function Permissions(props: { xml: string }) {
  let grants;
  try {
    grants = readPermissions(props.xml);
  } catch (e) {
    return <p class="error">{messageOf(e)}</p>;
  }
  return (
    <>
      {grants.map((g) => (
        <div key={g.subject} class="permissions">
          <p>
            For <span class="mono">{g.subject}</span>, valid {g.notBefore} to {g.notAfter}; anything not listed: <strong>{g.default || 'DENY'}</strong>.
          </p>
          <table>
            <caption>Topics allowed and denied, per direction</caption>
            <thead>
              <tr>
                <th scope="col">Rule</th>
                <th scope="col">Direction</th>
                <th scope="col">Topics</th>
                <th scope="col">Domains</th>
              </tr>
            </thead>
            <tbody>
              {g.rules.map((r, i) => (
                <tr key={i} class={`rule-${r.kind}`}>
                  <td>{r.kind === 'allow' ? 'allowed' : 'denied'}</td>
                  <td>{r.direction}</td>
                  <td>
                    <ul class="topics">
                      {r.topics.map((t) => (
                        <li key={t} class="mono">
                          {t}
                        </li>
                      ))}
                    </ul>
                    {r.partitions.length > 0 && <span class="muted">partitions: {r.partitions.join(', ')}</span>}
                  </td>
                  <td>{r.domains.join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
    </>
  );
}

export function EnclavePage(props: { ks: string; path: string }) {
  const { notice, setNotice, run } = useAction();
  const [revokePrevious, setRevokePrevious] = useState(false);
  const url = enclaveUrl(props.ks, props.path);
  const state = useLoad(async () => {
    const [enclave, bindings] = await Promise.all([get<Enclave>(url), get<{ bindings: Binding[] }>('/v1/bindings')]);
    return { enclave, bindings: bindings.bindings.filter((b) => b.keystore === props.ks && b.enclave === props.path) };
  }, [url]);
  const manage = may('manage', props.ks, props.path);
  const target = `${props.ks}:${props.path}`;

  const act = (what: () => Promise<string>) => run(what, state.reload);
  const rotate = () =>
    act(async () => {
      const e = await api<Enclave>('POST', enclaveUrl(props.ks, props.path, 'rotate'), { revokePrevious });
      return `Rotated ${target}: new serial ${e.serial}.`;
    });
  const revoke = () => {
    if (!confirm(`Revoke ${target}? Its serial joins the CRL and it leaves every robot's bundle. This cannot be undone (rotate re-issues it under a new key).`)) return;
    void act(async () => {
      await api('POST', enclaveUrl(props.ks, props.path, 'revoke'));
      return `Revoked ${target}.`;
    });
  };
  const uploadPolicy = (e: Event) => {
    e.preventDefault();
    const input = document.getElementById('policy-file') as HTMLInputElement;
    const file = input.files?.[0];
    if (!file) return setNotice({ kind: 'error', text: 'Choose a policy file first.' });
    void act(async () => {
      // A policy folder with includes (.tar.gz) goes through enclavectl, which packs the included files.
      if (!/\.xml$/i.test(file.name)) throw new Error('The console takes one policy XML file; send a policy folder with enclavectl.');
      await apiRaw('PUT', enclaveUrl(props.ks, props.path, 'policy'), await file.text(), 'application/xml');
      input.value = '';
      return `New permissions for ${target} from ${file.name}.`;
    });
  };

  return (
    <section aria-labelledby="enclave-title">
      <PageHead
        id="enclave-title"
        crumbs={[['#/keystores', 'Keystores'], [`#/keystores/${encodeURIComponent(props.ks)}`, props.ks]]}
        here={props.path}
        title={<>Enclave {props.path} <span class="muted">in {props.ks}</span></>}
        notice={notice}
      />
      <Loading state={state}>
        {({ enclave, bindings }) => (
          <>
            <dl class="facts">
              <dt>Status</dt>
              <dd>
                <span class={`badge status-${enclave.status}`} id="enclave-status">
                  {enclave.status}
                </span>
              </dd>
              <dt>Serial</dt>
              <dd class="mono">{enclave.serial}</dd>
              <dt>Subject</dt>
              <dd class="mono">{enclave.subject ?? '—'}</dd>
              <dt>Valid</dt>
              <dd>
                {fmtTime(enclave.notBefore)} to {fmtTime(enclave.notAfter)} ({daysLeft(enclave.notAfter)} days left)
              </dd>
              <dt>Certificate SHA-256</dt>
              <dd class="mono">{enclave.fingerprintSha256 ?? '—'}</dd>
              <dt>Permissions source</dt>
              <dd>{enclave.permissionsSource}</dd>
            </dl>
            {enclave.certificate && (
              <details>
                <summary>Certificate (PEM)</summary>
                <pre class="mono">{enclave.certificate}</pre>
              </details>
            )}
            <h2>Permissions</h2>
            {enclave.permissionsXml ? <Permissions xml={enclave.permissionsXml} /> : <p class="muted">Not shown to you.</p>}
            <h2>Bound robots</h2>
            <DataTable
              id="enclave-bindings"
              caption="Bindings of this enclave"
              rows={bindings}
              rowKey={(b) => b.id}
              text={(b) => `${b.robot ?? ''} ${Object.entries(b.selector ?? {}).join(' ')} ${b.status}`}
              columns={[
                { key: 'to', label: 'Robot or selector', sort: (b) => b.robot ?? '', cell: (b) => (b.robot ? <a href={`#/robots/${encodeURIComponent(b.robot)}`}>{b.robot}</a> : <Labels labels={b.selector} />) },
                { key: 'status', label: 'Status', sort: (b) => b.status, cell: (b) => <span title={b.statusReason}>{b.status}</span> },
                { key: 'by', label: 'Made by', sort: (b) => b.createdBy, cell: (b) => b.createdBy },
              ]}
            />
            {manage && (
              <>
                <h2>Actions</h2>
                <div class="inline">
                  <input id="rotate-revoke" type="checkbox" checked={revokePrevious} onChange={(e) => setRevokePrevious((e.target as HTMLInputElement).checked)} />
                  <label for="rotate-revoke">revoke the previous certificate (suspected key leak)</label>
                  <button type="button" onClick={rotate}>
                    {enclave.status === 'revoked' ? 'Re-issue' : 'Rotate'}
                  </button>
                  {enclave.status === 'active' && (
                    <button type="button" class="destructive" onClick={revoke}>
                      Revoke
                    </button>
                  )}
                </div>
                {enclave.status === 'active' && (
                  <form class="inline" onSubmit={uploadPolicy}>
                    <label for="policy-file">Policy file (sros2 policy XML)</label>
                    <input id="policy-file" type="file" accept=".xml,application/xml,text/xml" />
                    <button type="submit">Upload policy</button>
                  </form>
                )}
              </>
            )}
          </>
        )}
      </Loading>
    </section>
  );
}
