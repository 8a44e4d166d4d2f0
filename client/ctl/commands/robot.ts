/** `robot create|list|show|delete|token|set-labels|revoke-key|revoke-identity`. */
import type { Command } from 'commander';
import { confirm, withYes } from '../confirm.js';
import { dash, keyValues, labels, note, out, printJson, table, time } from '../output.js';
import { collectPairs, integer, pairsOf, withApi, withJson } from './shared.js';

interface Report {
  revision: string | null;
  filesystem: string | null;
  clockSkewMs: number | null;
  agentVersion: string | null;
  enclaves: { keystore: string; path: string; notAfter: string }[];
  reportedAt: string;
  lastSeenAt: string;
}
interface Robot {
  name: string;
  labels: Record<string, string>;
  enrolled: boolean;
  enrolledAt: string | null;
  keyFingerprint: string | null;
  agentVersion: string | null;
  createdAt: string;
  updatedAt: string;
  report?: Report | null;
  enrollmentTokens?: { expiresAt: string; reenroll: boolean; createdBy: string; createdAt: string }[];
  identities?: Identity[];
}
interface Identity {
  keystore: string;
  enclave: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  status: string;
  issuedAt: string;
}

const robotUrl = (name: string): string => `v1/robots/${encodeURIComponent(name)}`;

function describe(r: Robot): string {
  const lines = keyValues([
    ['name', r.name],
    ['labels', labels(r.labels)],
    ['enrolled', r.enrolled ? `yes, ${time(r.enrolledAt)}` : 'no'],
    ['key SHA-256', r.keyFingerprint ?? undefined],
    ['agent', r.agentVersion ?? undefined],
    ['created', time(r.createdAt)],
    ['last report', r.report ? time(r.report.reportedAt) : r.report === null ? 'never' : undefined],
    ['last seen', r.report ? time(r.report.lastSeenAt) : undefined],
    ['revision', r.report?.revision ?? undefined],
    ['filesystem', r.report?.filesystem ?? undefined],
    ['clock skew', r.report?.clockSkewMs != null ? `${r.report.clockSkewMs} ms` : undefined],
  ]);
  const parts = [lines];
  const held = r.report?.enclaves ?? [];
  if (held.length) {
    parts.push(`held enclaves:\n${table(held, [
      { header: 'KEYSTORE', value: (e) => e.keystore },
      { header: 'PATH', value: (e) => e.path },
      { header: 'NOT AFTER', value: (e) => time(e.notAfter) },
    ])}`);
  }
  const ids = r.identities ?? [];
  if (ids.length) {
    parts.push(`per-robot identities:\n${table(ids, [
      { header: 'KEYSTORE', value: (i) => i.keystore },
      { header: 'ENCLAVE', value: (i) => i.enclave },
      { header: 'SERIAL', value: (i) => i.serial },
      { header: 'NOT AFTER', value: (i) => time(i.notAfter) },
      { header: 'STATUS', value: (i) => i.status },
    ])}`);
  }
  const tokens = r.enrollmentTokens ?? [];
  if (tokens.length) {
    parts.push(`unused enrollment tokens:\n${table(tokens, [
      { header: 'KIND', value: (t) => (t.reenroll ? 're-enrollment' : 'enrollment') },
      { header: 'EXPIRES', value: (t) => time(t.expiresAt) },
      { header: 'BY', value: (t) => t.createdBy },
    ])}`);
  }
  return parts.join('\n\n');
}

export function register(program: Command): void {
  const robot = program.command('robot').description('robots: devices that enroll with a one-time token and hold enclaves');

  withJson(
    robot
      .command('create <name>')
      .description('register a robot (then give it an enrollment token: robot token NAME)')
      .option('--label <k=v>', 'a label, repeatable (site=tokyo)', collectPairs),
  ).action(async (name: string, o: { label?: Record<string, string>; json?: boolean }) => {
    const r = await withApi((api) => api.call<Robot>('POST', 'v1/robots', { json: { name, labels: o.label ?? {} } }));
    if (o.json) printJson(r);
    else out(`created robot ${r.name} (labels: ${labels(r.labels)})`);
  });

  withJson(robot.command('list').description('robots (members see the ones their bind grants may reach)')).action(async (o: { json?: boolean }) => {
    const res = await withApi((api) => api.call<{ robots: Robot[] }>('GET', 'v1/robots'));
    if (o.json) return printJson(res);
    if (res.robots.length === 0) return note('no robots');
    out(
      table(res.robots, [
        { header: 'NAME', value: (r) => r.name },
        { header: 'LABELS', value: (r) => labels(r.labels) },
        { header: 'ENROLLED', value: (r) => (r.enrolled ? time(r.enrolledAt) : 'no') },
        { header: 'AGENT', value: (r) => dash(r.agentVersion) },
      ]),
    );
  });

  withJson(robot.command('show <name>').description('a robot and what its agent last reported')).action(async (name: string, o: { json?: boolean }) => {
    const r = await withApi((api) => api.call<Robot>('GET', robotUrl(name)));
    if (o.json) printJson(r);
    else out(describe(r));
  });

  withYes(robot.command('delete <name>').description('delete a robot; its tokens stop working at once')).action(async (name: string, o: { yes?: boolean }) => {
    await confirm(`deleting robot ${name} ends its access at once: it must be created and enrolled again`, o.yes);
    await withApi((api) => api.call('DELETE', robotUrl(name)));
    out(`deleted robot ${name}`);
  });

  withJson(
    robot
      .command('token <name>')
      .description('a one-time enrollment token for enclave-agent enroll (prints only the token)')
      .option('--ttl <seconds>', 'lifetime of the token (default 3600, at most 7 days)', integer(60, 7 * 86_400))
      .option('--reenroll', 'for a robot that is enrolled already: the token lets a new device key replace its current one'),
  ).action(async (name: string, o: { ttl?: number; reenroll?: boolean; json?: boolean }) => {
    const json = { ...(o.ttl !== undefined ? { ttlSeconds: o.ttl } : {}), ...(o.reenroll ? { reenroll: true } : {}) };
    const t = await withApi((api) => api.call<{ token: string; expiresAt: string }>('POST', `${robotUrl(name)}/enrollment-tokens`, { json }));
    if (o.json) printJson(t);
    else out(t.token);
  });

  withJson(
    robot.command('set-labels <name> [labels...]').description('replace all labels of a robot (none given: remove them); selector bindings follow'),
  ).action(async (name: string, pairs: string[], o: { json?: boolean }) => {
    const r = await withApi((api) => api.call<Robot>('PATCH', robotUrl(name), { json: { labels: pairsOf(pairs) } }));
    if (o.json) printJson(r);
    else out(`robot ${r.name} labels: ${labels(r.labels)}`);
  });

  withYes(
    robot
      .command('revoke-identity <name> <keystore> <serial>')
      .description("revoke one of the robot's per-robot certificates (serial from robot show): only that serial joins the CRL"),
  ).action(async (name: string, ks: string, serial: string, o: { yes?: boolean }) => {
    await confirm(`revoking certificate ${serial} of robot ${name}: its agent drops that enclave and must request a new identity`, o.yes);
    await withApi((api) => api.call('DELETE', `${robotUrl(name)}/identities/${encodeURIComponent(ks)}/${encodeURIComponent(serial)}`));
    out(`revoked certificate ${serial} of robot ${name} (${ks}); other robots keep theirs`);
  });

  withYes(withJson(robot.command('revoke-key <name>').description('forget the device key: its tokens and unused enrollment tokens stop working, the robot must enroll again'))).action(
    async (name: string, o: { json?: boolean; yes?: boolean }) => {
      await confirm(`revoking the device key of robot ${name} ends its access at once: it must enroll again`, o.yes);
      const r = await withApi((api) => api.call<Robot>('POST', `${robotUrl(name)}/revoke-key`));
      if (o.json) printJson(r);
      else out(`device key of ${r.name} revoked: it must enroll again`);
    },
  );
}
