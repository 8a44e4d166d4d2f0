/** `keystore create|import|export|list|show|delete|governance`. */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { keystoreUrl } from '../api.js';
import { isGzip, packFolder } from '../archive.js';
import { confirm, withYes } from '../confirm.js';
import { CtlError, EXIT_REFUSED, UsageError } from '../errors.js';
import { dash, keyValues, note, out, printJson, table, time } from '../output.js';
import { Progress } from '../progress.js';
import { identityModeArg, integer, withApi, withJson, withProgress } from './shared.js';

interface Ca {
  certificate: string;
  subject: string;
  fingerprintSha256: string;
  notBefore: string;
  notAfter: string;
}
export interface Keystore {
  name: string;
  domainId: number;
  sharedCa: boolean;
  importOnly: boolean;
  origin: string;
  identityCa: Ca;
  permissionsCa: Ca;
  enclaveValidityDays: number;
  backdateSeconds: number;
  identityMode: 'shared' | 'per-robot';
  revocations: number;
  createdAt: string;
  updatedAt: string;
  enclaves?: number;
}

/** How a keystore or an enclave gives robots their keys. */
export const identityMode = (mode: string | undefined): string =>
  mode === 'per-robot' ? "per-robot (each robot makes its own key and gets its own certificate)" : 'shared (one key per enclave, sent to every bound robot)';

function describe(k: Keystore): string {
  const cas: [string, string | undefined][] = k.sharedCa
    ? [
        ['CA', `${k.identityCa.subject} (identity and permissions)`],
        ['CA SHA-256', k.identityCa.fingerprintSha256],
        ['CA valid', `${time(k.identityCa.notBefore)} to ${time(k.identityCa.notAfter)}`],
      ]
    : [
        ['identity CA', k.identityCa.subject],
        ['identity CA SHA-256', k.identityCa.fingerprintSha256],
        ['identity CA valid', `${time(k.identityCa.notBefore)} to ${time(k.identityCa.notAfter)}`],
        ['permissions CA', k.permissionsCa.subject],
        ['permissions CA SHA-256', k.permissionsCa.fingerprintSha256],
        ['permissions CA valid', `${time(k.permissionsCa.notBefore)} to ${time(k.permissionsCa.notAfter)}`],
      ];
  return keyValues([
    ['name', k.name],
    ['domain id', String(k.domainId)],
    ['origin', k.origin],
    ['mode', k.importOnly ? 'import-only (no CA private key: cannot issue, rotate or revoke)' : 'issuing'],
    ['identities', identityMode(k.identityMode)],
    ...cas,
    ['enclaves', k.enclaves === undefined ? undefined : String(k.enclaves)],
    ['enclave validity', `${k.enclaveValidityDays} days (backdated ${k.backdateSeconds} s)`],
    ['revocations', String(k.revocations)],
    ['created', time(k.createdAt)],
    ['updated', time(k.updatedAt)],
  ]);
}

/** A keystore folder is packed here; a file must already be a gzip archive. */
async function importBody(source: string): Promise<Buffer> {
  let st: fs.Stats;
  try {
    st = fs.statSync(source);
  } catch {
    throw new UsageError(`${source}: no such file or folder`);
  }
  if (st.isDirectory()) {
    if (!fs.existsSync(`${source}/public`) && !fs.existsSync(`${source}/keystore/public`)) {
      throw new UsageError(`${source} does not look like a sros2 keystore (no public/ folder in it)`);
    }
    return packFolder(source);
  }
  const data = fs.readFileSync(source);
  if (!isGzip(data)) throw new UsageError(`${source} is neither a keystore folder nor a .tar.gz`);
  return data;
}

export function register(program: Command): void {
  const ks = program.command('keystore').description('keystores: trust domains (CAs, governance, enclaves)');

  withJson(
    ks
      .command('create <name>')
      .description('generate a keystore: CA(s) and the default governance for its domain')
      .option('--domain-id <n>', 'ROS domain id of the default governance', integer(0, 2_147_483_647), 0)
      .option('--split-ca', 'separate identity and permissions CAs (default: one shared CA, as sros2 makes it)')
      .option('--validity-days <n>', 'CA validity in days (default 3650)', integer(1, 36500))
      .option('--enclave-validity-days <n>', 'default enclave validity in days (default 365)', integer(1, 10950))
      .option('--ca-name <cn>', 'CA common name (default sros2CA)')
      .option('--identity-mode <mode>', "what its enclaves get unless they say: shared (one key, sros2's way) or per-robot (each robot's own key)", identityModeArg),
  ).action(async (name: string, o: { domainId: number; splitCa?: boolean; validityDays?: number; enclaveValidityDays?: number; caName?: string; identityMode?: string; json?: boolean }) => {
    const k = await withApi((api) =>
      api.call<Keystore>('POST', 'v1/keystores', {
        json: { name, domainId: o.domainId, splitCa: o.splitCa === true, validityDays: o.validityDays, enclaveValidityDays: o.enclaveValidityDays, caName: o.caName, identityMode: o.identityMode },
      }),
    );
    if (o.json) printJson(k);
    else out(`created keystore ${k.name}\n${describe(k)}`);
  });

  withProgress(
    withJson(
      ks
        .command('import <name> <path>')
        .description('create keystore NAME from a sros2 keystore folder or a .tar.gz of one'),
    ),
  ).action(async (name: string, source: string, o: { json?: boolean; progress?: boolean }) => {
    const body = await importBody(source);
    const progress = new Progress({ label: `uploading ${name}`, total: body.length, kind: 'bytes', enabled: Progress.wanted(o.progress) });
    const k = await withApi((api) => api.upload<Keystore>('POST', `${keystoreUrl(name)}/import`, body, 'application/gzip', progress));
    progress.finish();
    if (o.json) printJson(k);
    else out(`imported keystore ${k.name} (${k.enclaves ?? 0} enclaves)\n${describe(k)}`);
  });

  withProgress(
    ks
      .command('export <name> <out>')
      .description('download the keystore in sros2 layout as a .tar.gz (OUT "-" = stdout); written 0600')
      .option('--private', 'include the CA private keys')
      .option('--force', 'replace OUT if it exists'),
  ).action(async (name: string, dest: string, o: { private?: boolean; force?: boolean; progress?: boolean }) => {
    if (dest === '-' && process.stdout.isTTY) throw new UsageError('not writing a binary archive to a terminal: redirect stdout or give a file name');
    if (dest !== '-') {
      if (fs.existsSync(dest) && !o.force) throw new UsageError(`${dest} exists (use --force to replace it)`);
      if (!fs.statSync(path.dirname(path.resolve(dest)), { throwIfNoEntry: false })?.isDirectory()) {
        throw new UsageError(`${path.dirname(dest)}: no such folder`);
      }
    }
    const progress = new Progress({ label: `downloading ${name}`, kind: 'bytes', enabled: Progress.wanted(o.progress) });
    const bytes = await withApi((api) => api.download(`${keystoreUrl(name)}/export?private=${o.private === true}`, dest, progress));
    progress.finish();
    if (dest === '-') return;
    const head = Buffer.alloc(2);
    const fd = fs.openSync(dest, 'r');
    fs.readSync(fd, head, 0, 2, 0);
    fs.closeSync(fd);
    if (!isGzip(head)) throw new CtlError(`${dest}: the server did not send a gzip archive`, EXIT_REFUSED);
    out(`wrote ${dest} (${bytes} bytes${o.private ? ', with CA private keys' : ''})`);
  });

  withJson(ks.command('list').description('keystores you can see')).action(async (o: { json?: boolean }) => {
    const res = await withApi((api) => api.call<{ keystores: Keystore[] }>('GET', 'v1/keystores'));
    if (o.json) return printJson(res);
    if (res.keystores.length === 0) return note('no keystores');
    out(
      table(res.keystores, [
        { header: 'NAME', value: (k) => k.name },
        { header: 'DOMAIN', value: (k) => String(k.domainId) },
        { header: 'CA', value: (k) => (k.sharedCa ? 'shared' : 'split') },
        { header: 'ORIGIN', value: (k) => k.origin },
        { header: 'MODE', value: (k) => (k.importOnly ? 'import-only' : 'issuing') },
        { header: 'IDENTITIES', value: (k) => k.identityMode },
        { header: 'REVOKED', value: (k) => dash(k.revocations) },
        { header: 'CA EXPIRES', value: (k) => time(k.identityCa.notAfter < k.permissionsCa.notAfter ? k.identityCa.notAfter : k.permissionsCa.notAfter) },
      ]),
    );
  });

  withJson(ks.command('show <name>').description('a keystore: CAs, fingerprints, expiry').option('--ca-cert', 'print only the identity CA certificate (PEM)')).action(
    async (name: string, o: { json?: boolean; caCert?: boolean }) => {
      const k = await withApi((api) => api.call<Keystore>('GET', keystoreUrl(name)));
      if (o.json) printJson(k);
      else if (o.caCert) out(k.identityCa.certificate);
      else out(describe(k));
    },
  );

  withYes(ks.command('delete <name>').description('delete a keystore with all its enclaves, grants and bindings')).action(
    async (name: string, o: { yes?: boolean }) => {
      await confirm(`deleting keystore ${name} removes every enclave, grant and binding in it`, o.yes);
      await withApi((api) => api.call('DELETE', keystoreUrl(name)));
      out(`deleted keystore ${name}`);
    },
  );

  withJson(ks.command('governance <name> <file>').description('replace the governance (XML), validated and re-signed by the server')).action(
    async (name: string, file: string, o: { json?: boolean }) => {
      let xml: Buffer;
      try {
        xml = fs.readFileSync(file);
      } catch {
        throw new UsageError(`cannot read ${file}`);
      }
      const k = await withApi((api) => api.upload<Keystore>('PUT', `${keystoreUrl(name)}/governance`, xml, 'application/xml'));
      if (o.json) printJson(k);
      else out(`governance of ${k.name} replaced and signed`);
    },
  );
}
