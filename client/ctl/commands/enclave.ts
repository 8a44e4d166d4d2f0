/** `enclave create|list|show|rotate|revoke|delete|policy`. */
import type { Command } from 'commander';
import { enclaveUrl, keystoreUrl, type Api } from '../api.js';
import { confirm, withYes } from '../confirm.js';
import { CtlError, UsageError, toCtlError } from '../errors.js';
import { keyValues, note, out, printJson, table, time } from '../output.js';
import { policyFields, readPolicy, type PolicyInput } from '../policy.js';
import { Progress } from '../progress.js';
import { identityMode } from './keystore.js';
import { identityModeArg, integer, withApi, withJson, withProgress } from './shared.js';

/** The API takes a path with or without its leading slash; messages show the enclave's real name. */
const absolute = (p: string): string => (p.startsWith('/') ? p : `/${p}`);

export interface Enclave {
  keystore: string;
  path: string;
  status: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  permissionsSource: string;
  identityMode?: string;
  createdAt: string;
  updatedAt: string;
  certificate?: string;
  subject?: string;
  fingerprintSha256?: string;
  permissionsXml?: string;
  policyXml?: string | null;
}

/** The API takes up to 5000 per batch, but smaller requests show progress and stay under the body limit. */
const DEFAULT_CHUNK = 100;
/** Each enclave costs a key generation and two signatures: give a whole chunk time. */
const BATCH_TIMEOUT_MS = 600_000;

function enclaveTable(rows: Enclave[]): string {
  return table(rows, [
    { header: 'PATH', value: (e) => e.path },
    { header: 'STATUS', value: (e) => e.status },
    // A per-robot enclave has no serial of its own: each robot's certificate has one (robot show).
    { header: 'SERIAL', value: (e) => (e.identityMode === 'per-robot' ? '(per robot)' : e.serial) },
    { header: 'NOT AFTER', value: (e) => time(e.notAfter) },
    { header: 'PERMISSIONS', value: (e) => e.permissionsSource },
  ]);
}

function describe(e: Enclave): string {
  return keyValues([
    ['keystore', e.keystore],
    ['path', e.path],
    ['status', e.status],
    ['identity', identityMode(e.identityMode)],
    ['serial', e.identityMode === 'per-robot' ? undefined : e.serial],
    ['subject', e.subject],
    ['SHA-256', e.fingerprintSha256],
    ['valid', `${time(e.notBefore)} to ${time(e.notAfter)}`],
    ['permissions', e.permissionsSource],
    ['created', time(e.createdAt)],
    ['updated', time(e.updatedAt)],
  ]);
}

function policyNote(p: PolicyInput | undefined): void {
  if (p?.kind === 'archive' && p.files.length > 1) note(`policy ${p.file}: sending it with ${p.files.length - 1} included file(s)`);
}

async function createBatch(
  api: Api,
  ks: string,
  paths: string[],
  extra: Record<string, unknown>,
  chunkSize: number,
  progressFlag: boolean | undefined,
): Promise<{ created: number; enclaves: Enclave[] }> {
  const chunks: string[][] = [];
  for (let i = 0; i < paths.length; i += chunkSize) chunks.push(paths.slice(i, i + chunkSize));
  // One request is already all-or-nothing and quick; a bar is for batches that take several.
  const progress = new Progress({
    label: `creating enclaves in ${ks}`,
    total: paths.length,
    kind: 'count',
    enabled: progressFlag ?? (chunks.length > 1 && process.stderr.isTTY === true),
  });
  const enclaves: Enclave[] = [];
  progress.update(0);
  for (const chunk of chunks) {
    try {
      const res = await api.call<{ created: number; enclaves: Enclave[] }>('POST', `${keystoreUrl(ks)}/enclaves:batch`, {
        json: { paths: chunk, ...extra },
        timeoutMs: BATCH_TIMEOUT_MS,
      });
      enclaves.push(...res.enclaves);
      progress.update(enclaves.length);
    } catch (err) {
      progress.finish();
      const e = toCtlError(err, api.server);
      if (enclaves.length === 0) throw e;
      // Each request is atomic, the whole command is not: say exactly where it stopped.
      throw new CtlError(`${e.message} (the first ${enclaves.length} of ${paths.length} enclaves were created; none after)`, e.exitCode, e.details);
    }
  }
  progress.finish();
  return { created: enclaves.length, enclaves };
}

export function register(program: Command): void {
  const en = program.command('enclave').description('enclaves: one DDS participant identity each (key, certificate, permissions)');

  withProgress(
    withJson(
      en
        .command('create <keystore> <paths...>')
        .description('create one enclave, or several in batches (each batch all-or-nothing)')
        .option('--policy <file>', 'sros2 policy: .policy.xml (its xi:includes are packed along) or a .tar.gz policy folder')
        .option('--policy-file <name>', 'main policy file inside a .tar.gz given to --policy, when it holds several')
        .option('--validity-days <n>', 'certificate validity (default: the keystore\'s)', integer(1, 36500))
        .option('--identity-mode <mode>', "shared or per-robot (default: the keystore's)", identityModeArg)
        .option('--chunk-size <n>', 'enclaves per request', integer(1, 5000), DEFAULT_CHUNK),
    ),
  ).action(
    async (
      ks: string,
      paths: string[],
      o: { policy?: string; policyFile?: string; validityDays?: number; identityMode?: string; chunkSize: number; json?: boolean; progress?: boolean },
    ) => {
      if (o.policyFile && !o.policy) throw new UsageError('--policy-file needs --policy ARCHIVE.tar.gz');
      // Across chunks the server cannot see a repeat until the second request: catch it before any is sent.
      const dup = paths.find((p, i) => paths.indexOf(p) !== i);
      if (dup !== undefined) throw new UsageError(`${dup} is given twice`);
      const policy = o.policy ? await readPolicy(o.policy, o.policyFile) : undefined;
      policyNote(policy);
      const extra = {
        ...policyFields(policy),
        ...(o.validityDays !== undefined ? { validityDays: o.validityDays } : {}),
        ...(o.identityMode !== undefined ? { identityMode: o.identityMode } : {}),
      };
      await withApi(async (api) => {
        if (paths.length === 1) {
          const e = await api.call<Enclave>('POST', `${keystoreUrl(ks)}/enclaves`, { json: { path: paths[0], ...extra }, timeoutMs: BATCH_TIMEOUT_MS });
          if (o.json) printJson(e);
          else out(`created enclave ${e.keystore}:${e.path}\n${enclaveTable([e])}`);
          return;
        }
        const res = await createBatch(api, ks, paths, extra, o.chunkSize, o.progress);
        if (o.json) printJson(res);
        else out(`created ${res.created} enclaves in ${ks}\n${enclaveTable(res.enclaves)}`);
      });
    },
  );

  withJson(en.command('list <keystore>').description('enclaves of a keystore you may read')).action(async (ks: string, o: { json?: boolean }) => {
    const res = await withApi((api) => api.call<{ enclaves: Enclave[] }>('GET', `${keystoreUrl(ks)}/enclaves`));
    if (o.json) return printJson(res);
    if (res.enclaves.length === 0) return note(`no enclaves in ${ks} that you may read`);
    out(enclaveTable([...res.enclaves].sort((a, b) => a.path.localeCompare(b.path))));
  });

  withJson(
    en
      .command('show <keystore> <path>')
      .description('one enclave: certificate, serial, validity, permissions')
      .option('--cert', 'print only the certificate (PEM)')
      .option('--permissions', 'print only the permissions XML')
      .option('--policy', 'print only the policy XML it was made from'),
  ).action(async (ks: string, p: string, o: { json?: boolean; cert?: boolean; permissions?: boolean; policy?: boolean }) => {
    const e = await withApi((api) => api.call<Enclave>('GET', enclaveUrl(ks, p)));
    if (o.json) printJson(e);
    else if (o.cert) {
      if (e.identityMode === 'per-robot') throw new CtlError(`${ks}:${e.path} is per-robot: each robot has its own certificate (enclavectl robot show NAME)`);
      out(e.certificate ?? '');
    }
    else if (o.permissions) out(e.permissionsXml ?? '');
    else if (o.policy) {
      if (!e.policyXml) throw new CtlError(`${ks}:${e.path} has no policy (permissions: ${e.permissionsSource})`);
      out(e.policyXml);
    } else out(describe(e));
  });

  withJson(
    en
      .command('rotate <keystore> <path>')
      .description('new key, certificate and serial; permissions re-signed for the new validity')
      .option('--validity-days <n>', 'validity of the new certificate', integer(1, 36500)),
  ).action(async (ks: string, p: string, o: { json?: boolean; validityDays?: number }) => {
    const e = await withApi((api) =>
      api.call<Enclave>('POST', `${enclaveUrl(ks, p)}/rotate`, { json: o.validityDays !== undefined ? { validityDays: o.validityDays } : {} }),
    );
    if (o.json) printJson(e);
    else out(`rotated ${e.keystore}:${e.path}: serial ${e.serial}, valid until ${time(e.notAfter)}`);
  });

  withYes(withJson(en.command('revoke <keystore> <path>').description('revoke: the serial joins the CRL and the enclave leaves every bundle'))).action(
    async (ks: string, p: string, o: { json?: boolean; yes?: boolean }) => {
      await confirm(`revoking ${ks}:${absolute(p)} cannot be undone: robots lose it at once`, o.yes);
      const e = await withApi((api) => api.call<Enclave>('POST', `${enclaveUrl(ks, p)}/revoke`));
      if (o.json) printJson(e);
      else out(`revoked ${e.keystore}:${e.path} (serial ${e.serial})`);
    },
  );

  withYes(en.command('delete <keystore> <path>').description('delete (an active enclave is revoked first) with its bindings')).action(
    async (ks: string, p: string, o: { yes?: boolean }) => {
      await confirm(`deleting ${ks}:${absolute(p)} revokes it and removes its bindings: robots lose it at once`, o.yes);
      await withApi((api) => api.call('DELETE', enclaveUrl(ks, p)));
      out(`deleted ${ks}:${absolute(p)}`);
    },
  );

  withJson(
    en
      .command('policy <keystore> <path> <file>')
      .description('replace the permissions from a policy (.policy.xml with its includes, or a .tar.gz folder)')
      .option('--policy-file <name>', 'main policy file inside a .tar.gz, when it holds several'),
  ).action(async (ks: string, p: string, file: string, o: { json?: boolean; policyFile?: string }) => {
    const policy = await readPolicy(file, o.policyFile);
    policyNote(policy);
    const e = await withApi((api) => {
      const url = `${enclaveUrl(ks, p)}/policy`;
      if (policy.kind === 'xml') return api.upload<Enclave>('PUT', url, Buffer.from(policy.xml), 'application/xml');
      const q = policy.file ? `?file=${encodeURIComponent(policy.file)}` : '';
      return api.upload<Enclave>('PUT', `${url}${q}`, policy.archive, 'application/gzip');
    });
    if (o.json) printJson(e);
    else out(`permissions of ${e.keystore}:${e.path} replaced and re-signed (valid until ${time(e.notAfter)})`);
  });

  withYes(
    withJson(
      en
        .command('set-mode <keystore> <path> <mode>')
        .description("switch an enclave between one shared key (shared) and each robot's own key (per-robot); the old certificate(s) are revoked"),
    ),
  ).action(async (ks: string, p: string, mode: string, o: { json?: boolean; yes?: boolean }) => {
    const m = identityModeArg(mode);
    await confirm(
      m === 'per-robot'
        ? `${ks}:${absolute(p)}: the shared key is deleted and its certificate revoked; each robot must request its own`
        : `${ks}:${absolute(p)}: every robot's own certificate is revoked; robots get a new shared key`,
      o.yes,
    );
    const e = await withApi((api) => api.call<Enclave>('PATCH', enclaveUrl(ks, p), { json: { identityMode: m } }));
    if (o.json) printJson(e);
    else out(`${e.keystore}:${e.path} identity: ${identityMode(e.identityMode)}`);
  });
}

