import { useState } from 'preact/hooks';
import { selectorMatches } from '../../../server/acl/acl';
import { api, currentSession, get } from '../api';
import { DataTable, daysLeft, fmtTime, Labels, Loading, PageHead, relative, useAction, useLoad } from '../components';
import type { Binding, Fleet, RobotDetail } from '../types';
import { StateBadge } from './fleet';

interface Loaded {
  robot: RobotDetail;
  fleet: Fleet['robots'][number] | undefined;
  bindings: Binding[];
}

export function RobotPage(props: { name: string }) {
  const admin = currentSession()?.role === 'admin';
  const { notice, setNotice, run } = useAction();
  const [command, setCommand] = useState<string | null>(null);
  const [ttl, setTtl] = useState(3600);
  const [reenroll, setReenroll] = useState(false);
  const state = useLoad<Loaded>(async () => {
    const robot = await get<RobotDetail>(`/v1/robots/${encodeURIComponent(props.name)}`);
    const [fleet, bindings] = await Promise.all([get<Fleet>('/v1/fleet'), get<{ bindings: Binding[] }>('/v1/bindings')]);
    return {
      robot,
      fleet: fleet.robots.find((r) => r.name === props.name),
      bindings: bindings.bindings.filter((b) => b.robot === props.name || (b.selector !== undefined && selectorMatches(b.selector, robot.labels))),
    };
  }, [props.name]);

  const act = (what: () => Promise<string>) => run(what, state.reload);
  const mintToken = () =>
    act(async () => {
      const t = await api<{ token: string; expiresAt: string }>('POST', `/v1/robots/${encodeURIComponent(props.name)}/enrollment-tokens`, { ttlSeconds: ttl, reenroll });
      setCommand(`enclave-agent enroll --server ${location.origin} --ca ca.cert.pem --token ${t.token}`);
      return `Enrollment token made; it works once, until ${fmtTime(t.expiresAt)}.`;
    });
  const copy = async () => {
    if (!command) return;
    try {
      await navigator.clipboard.writeText(command);
      setNotice({ kind: 'ok', text: 'Command copied.' });
    } catch {
      (document.getElementById('enroll-command') as HTMLTextAreaElement | null)?.select();
      setNotice({ kind: 'error', text: 'The browser refused the clipboard: the command is selected, copy it with Ctrl+C.' });
    }
  };
  const revokeKey = () => {
    if (!confirm(`Revoke the device key of ${props.name}? Its tokens stop working at once; it needs a new enrollment token to come back.`)) return;
    void act(async () => {
      await api('POST', `/v1/robots/${encodeURIComponent(props.name)}/revoke-key`);
      return `The device key of ${props.name} is revoked.`;
    });
  };
  const remove = () => {
    if (!confirm(`Delete robot ${props.name} with its bindings and enrollment tokens? This cannot be undone.`)) return;
    // Not `act`: its reload would ask for the robot just deleted (a 404) before the hash change leaves the page.
    void run(async () => {
      await api('DELETE', `/v1/robots/${encodeURIComponent(props.name)}`);
      location.hash = '#/fleet';
      return `Robot ${props.name} deleted.`;
    });
  };

  return (
    <section aria-labelledby="robot-title">
      <PageHead id="robot-title" crumbs={[['#/fleet', 'Fleet']]} here={props.name} title={`Robot ${props.name}`} notice={notice} />
      <Loading state={state}>
        {({ robot, fleet, bindings }) => (
          <>
            <dl class="facts">
              <dt>Labels</dt>
              <dd><Labels labels={robot.labels} /></dd>
              <dt>Revision</dt>
              <dd>{fleet ? <StateBadge state={fleet.state} /> : '—'} held {robot.report?.revision ?? '—'}, current {fleet?.currentRevision ?? '—'}</dd>
              <dt>Enrolled</dt>
              <dd>{robot.enrolled ? fmtTime(robot.enrolledAt) : 'no'}</dd>
              <dt>Device key SHA-256</dt>
              <dd class="mono">{robot.keyFingerprint ?? '—'}</dd>
              <dt>Agent</dt>
              <dd>{robot.report?.agentVersion ?? robot.agentVersion ?? '—'}</dd>
              <dt>Last seen</dt>
              <dd>{robot.report ? `${fmtTime(robot.report.lastSeenAt)} (${relative(robot.report.lastSeenAt)})` : '—'}</dd>
              <dt>Filesystem</dt>
              <dd>{robot.report?.filesystem ?? '—'}</dd>
              <dt>Clock skew</dt>
              <dd>{robot.report?.clockSkewMs != null ? `${robot.report.clockSkewMs} ms` : '—'}</dd>
            </dl>

            <h2>Held enclaves</h2>
            <DataTable
              id="held"
              caption="Enclaves the agent last reported holding"
              rows={robot.report?.enclaves ?? []}
              rowKey={(e) => `${e.keystore}:${e.path}`}
              text={(e) => `${e.keystore} ${e.path}`}
              initialSort={{ key: 'expires', dir: 'asc' }}
              columns={[
                { key: 'keystore', label: 'Keystore', sort: (e) => e.keystore, cell: (e) => e.keystore },
                { key: 'path', label: 'Enclave', sort: (e) => e.path, cell: (e) => <a href={`#/keystores/${encodeURIComponent(e.keystore)}/enclaves${e.path}`}>{e.path}</a> },
                { key: 'expires', label: 'Expires', sort: (e) => e.notAfter, cell: (e) => `${fmtTime(e.notAfter)} (${daysLeft(e.notAfter)} d)` },
              ]}
            />

            <h2>Bindings</h2>
            <DataTable
              id="robot-bindings"
              caption="Bindings that reach this robot"
              rows={bindings}
              rowKey={(b) => b.id}
              text={(b) => `${b.keystore} ${b.enclave} ${b.status}`}
              columns={[
                { key: 'enclave', label: 'Enclave', sort: (b) => `${b.keystore}:${b.enclave}`, cell: (b) => <a href={`#/keystores/${encodeURIComponent(b.keystore)}/enclaves${b.enclave}`}>{`${b.keystore}:${b.enclave}`}</a> },
                { key: 'how', label: 'Bound by', cell: (b) => (b.robot ? 'name' : <>selector <Labels labels={b.selector} /></>) },
                { key: 'status', label: 'Status', sort: (b) => b.status, cell: (b) => <span title={b.statusReason}>{b.status}</span> },
              ]}
            />

            {admin && (
              <>
                <h2>Actions</h2>
                <form
                  class="inline"
                  onSubmit={(e) => {
                    e.preventDefault();
                    void mintToken();
                  }}
                >
                  <label for="token-ttl">Token lifetime (seconds)</label>
                  <input id="token-ttl" type="number" min={60} max={604800} value={ttl} onChange={(e) => setTtl(Number((e.target as HTMLInputElement).value))} />
                  <input id="token-reenroll" type="checkbox" checked={reenroll} onChange={(e) => setReenroll((e.target as HTMLInputElement).checked)} />
                  <label for="token-reenroll">replace an enrolled key</label>
                  <button type="submit">Make enrollment token</button>
                </form>
                {command && (
                  <div class="command">
                    <label for="enroll-command">Run on the robot (pin the server's CA file as ca.cert.pem)</label>
                    <textarea id="enroll-command" readOnly rows={2} value={command} />
                    <button type="button" onClick={copy}>
                      Copy command
                    </button>
                  </div>
                )}
                <p class="danger">
                  <button type="button" disabled={!robot.enrolled} onClick={revokeKey}>
                    Revoke device key
                  </button>{' '}
                  <button type="button" class="destructive" onClick={remove}>
                    Delete robot
                  </button>
                </p>
              </>
            )}
          </>
        )}
      </Loading>
    </section>
  );
}

