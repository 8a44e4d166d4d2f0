/**
 * sros2's keystore layout (`ros2 security create_keystore` / `create_enclave`), both ways:
 *
 *   public/ca.cert.pem        public/identity_ca.cert.pem -> ca.cert.pem   public/permissions_ca.cert.pem -> ca.cert.pem
 *   private/ca.key.pem        private/identity_ca.key.pem -> ca.key.pem    private/permissions_ca.key.pem -> ca.key.pem
 *   enclaves/governance.xml   enclaves/governance.p7s
 *   enclaves/<a>/<b>/         cert.pem key.pem permissions.xml permissions.p7s
 *                             identity_ca.cert.pem permissions_ca.cert.pem governance.p7s (relative symlinks)
 *
 * Import (`readSros2Keystore`) checks everything cryptographically and collects every problem; export
 * (`writeSros2Keystore`) produces exactly that layout under a top folder `keystore/`.
 */
import { PkiError, inspectCertificate, isSignedBy, keyMatchesCertificate, verifySmime, type CertificateInfo } from '../pki/index.js';
import { enclaveNameProblem } from '../policy/names.js';
import { resolveEntry, resolveEntryPath, type ArchiveEntry, type TarInputEntry } from './archive.js';
import {
  canonicalSerial,
  checkCrl,
  governanceDomainId,
  normalizeSignedText,
  parseDdsDate,
  permissionsGrants,
  sameDistinguishedName,
  validityProblem,
} from './import-check.js';
import type { EnclaveMaterial, KeystoreMaterial, PerRobotEnclaveMaterial } from './model.js';

export interface Sros2ReadResult {
  /** Present only when `problems` is empty. */
  material?: KeystoreMaterial;
  /** Every problem found, each naming the file or enclave (paths relative to the keystore folder). */
  problems: string[];
  /**
   * The identity CRL from `public/crl.pem`, when the keystore has one (sros2's never do; ours may) and it
   * is signed by the identity CA. No enclave whose certificate it revokes is accepted. Only set with material.
   */
  crlPem?: string;
}

type CertInfo = CertificateInfo;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The keystore folder inside the archive: `''` (folders at the root) or `X/` (a single top folder). */
function findRoot(entries: ReadonlyMap<string, ArchiveEntry>): string | undefined {
  const names = [...entries.keys()];
  const has = (p: string): boolean => entries.has(p) || names.some((n) => n.startsWith(`${p}/`));
  if (has('enclaves') || has('public')) return '';
  const tops = new Set(names.map((n) => n.split('/')[0]!));
  if (tops.size === 1) {
    const top = [...tops][0]!;
    if (entries.get(top)?.type !== 'file' && (has(`${top}/enclaves`) || has(`${top}/public`))) return `${top}/`;
  }
  return undefined;
}

type Read = { state: 'missing' } | { state: 'bad'; problem: string } | { state: 'ok'; text: string; bytes: Buffer };

/**
 * Reads and validates an sros2 keystore from archive entries (see `readTarGz`). `now` is the clock the
 * validity rule uses (see `validityProblem`: expired is refused, a start up to one day ahead is allowed).
 */
export function readSros2Keystore(entries: ReadonlyMap<string, ArchiveEntry>, now: Date = new Date()): Sros2ReadResult {
  const problems: string[] = [];
  const root = findRoot(entries);
  if (root === undefined) {
    return {
      problems: ['no keystore found: expected public/ and enclaves/ at the archive root or inside a single top folder'],
    };
  }

  const read = (rel: string, shown = rel): Read => {
    const full = root + rel;
    const entry = entries.get(full);
    if (!entry) return { state: 'missing' };
    if (entry.type === 'directory') return { state: 'bad', problem: `${shown} is a folder, not a file` };
    const bytes = resolveEntry(entries, full);
    if (!bytes) {
      const target = entry.type === 'symlink' ? entry.target : '';
      return { state: 'bad', problem: `${shown} is a symlink (to ${JSON.stringify(target)}) that does not lead to a file` };
    }
    if (entry.type === 'symlink') {
      const resolved = resolveEntryPath(entries, full);
      if (resolved !== undefined && !resolved.startsWith(root))
        return { state: 'bad', problem: `${shown} is a symlink that leads outside the keystore folder` };
    }
    try {
      return { state: 'ok', text: utf8.decode(bytes), bytes };
    } catch {
      return { state: 'bad', problem: `${shown} is not UTF-8 text` };
    }
  };
  /** A required file's text, or undefined after recording why not. */
  const need = (rel: string, label = rel): string | undefined => {
    const r = read(rel);
    if (r.state === 'ok') return r.text;
    problems.push(r.state === 'missing' ? `${label} is missing` : r.problem);
    return undefined;
  };
  const inspect = (pem: string, label: string): CertInfo | undefined => {
    try {
      return inspectCertificate(pem);
    } catch (err) {
      problems.push(`${label} is not a readable certificate (${errMessage(err)})`);
      return undefined;
    }
  };
  const keyMatches = (keyPem: string, certPem: string): boolean => {
    try {
      return keyMatchesCertificate(keyPem, certPem);
    } catch {
      return false;
    }
  };
  const signedBy = (certPem: string, caPem: string): boolean => {
    try {
      return isSignedBy(certPem, caPem);
    } catch {
      return false;
    }
  };
  /** Verifies a .p7s against the permissions CA and compares its signed text with the XML; returns ok. */
  const checkSigned = (p7s: string, xml: string, p7sLabel: string, xmlLabel: string, caPem: string): boolean => {
    let content: string;
    try {
      // Validity is judged by this module's own rule (checkCa), so the signer's dates are not checked here.
      content = verifySmime(p7s, caPem, { label: p7sLabel, at: null }).content;
    } catch (err) {
      const message = errMessage(err);
      problems.push(
        err instanceof PkiError && message.startsWith(`${p7sLabel} `)
          ? message.includes('permissions CA')
            ? message
            : `${message} (checked against the permissions CA)`
          : `${p7sLabel} could not be verified against the permissions CA (${message})`,
      );
      return false;
    }
    if (normalizeSignedText(content, true) !== normalizeSignedText(xml)) {
      problems.push(`${p7sLabel}: the signed content differs from ${xmlLabel}`);
      return false;
    }
    return true;
  };

  // ---- CAs -------------------------------------------------------------------------------------
  const caCert = read('public/ca.cert.pem');
  const idCert = read('public/identity_ca.cert.pem');
  const permCert = read('public/permissions_ca.cert.pem');
  for (const r of [caCert, idCert, permCert]) if (r.state === 'bad') problems.push(r.problem);
  const pick = (role: Read, roleFile: string): { pem: string; file: string } | undefined => {
    if (role.state === 'ok') return { pem: role.text, file: roleFile };
    if (role.state === 'missing' && caCert.state === 'ok') return { pem: caCert.text, file: 'public/ca.cert.pem' };
    if (role.state === 'missing' && caCert.state === 'missing')
      problems.push(`${roleFile} is missing (and there is no public/ca.cert.pem)`);
    return undefined;
  };
  const identity = pick(idCert, 'public/identity_ca.cert.pem');
  const permissions = pick(permCert, 'public/permissions_ca.cert.pem');

  const checkCa = (ca: { pem: string; file: string } | undefined, role: string): CertInfo | undefined => {
    if (!ca) return undefined;
    const info = inspect(ca.pem, ca.file);
    if (!info) return undefined;
    if (!info.isCa) problems.push(`${ca.file}: the ${role} CA certificate is not a CA (basicConstraints CA:TRUE missing)`);
    const v = validityProblem(info.notBefore, info.notAfter, now);
    if (v) problems.push(`${ca.file}: the ${role} CA certificate ${v}`);
    return info;
  };
  const sameText = !!identity && !!permissions && identity.pem === permissions.pem;
  const idInfo = checkCa(identity, sameText ? 'identity and permissions' : 'identity');
  const permInfo = sameText ? idInfo : checkCa(permissions, 'permissions');
  const sharedCa = !!idInfo && !!permInfo && idInfo.fingerprintSha256 === permInfo.fingerprintSha256;
  if (caCert.state === 'ok' && idInfo && permInfo) {
    const caInfo = caCert.text === identity?.pem ? idInfo : caCert.text === permissions?.pem ? permInfo : inspect(caCert.text, 'public/ca.cert.pem');
    if (caInfo && caInfo.fingerprintSha256 !== idInfo.fingerprintSha256 && caInfo.fingerprintSha256 !== permInfo.fingerprintSha256)
      problems.push('public/ca.cert.pem is neither the identity CA nor the permissions CA certificate');
  }

  // CA private keys: optional ("import-only" keystores have none).
  const caKey = read('private/ca.key.pem');
  const idKey = read('private/identity_ca.key.pem');
  const permKey = read('private/permissions_ca.key.pem');
  for (const r of [caKey, idKey, permKey]) if (r.state === 'bad') problems.push(r.problem);
  const pickKey = (role: Read, roleFile: string, ca: { pem: string } | undefined, roleName: string): string | undefined => {
    if (!ca) return undefined;
    if (role.state === 'ok') {
      if (keyMatches(role.text, ca.pem)) return role.text;
      problems.push(`${roleFile} does not match the ${roleName} CA certificate`);
      return undefined;
    }
    if (role.state === 'missing' && caKey.state === 'ok' && keyMatches(caKey.text, ca.pem)) return caKey.text;
    return undefined;
  };
  const identityCaKeyPem = pickKey(idKey, 'private/identity_ca.key.pem', identity, 'identity');
  const permissionsCaKeyPem = pickKey(permKey, 'private/permissions_ca.key.pem', permissions, 'permissions');
  if (caKey.state === 'ok' && identity && permissions && !keyMatches(caKey.text, identity.pem) && !keyMatches(caKey.text, permissions.pem))
    problems.push('private/ca.key.pem matches neither the identity CA nor the permissions CA certificate');

  // ---- governance ------------------------------------------------------------------------------
  const governanceXml = need('enclaves/governance.xml');
  const governanceP7s = need('enclaves/governance.p7s');
  let domainId: number | undefined;
  if (governanceXml !== undefined) {
    const d = governanceDomainId(governanceXml);
    if (d.problem) problems.push(`enclaves/governance.xml ${d.problem}`);
    domainId = d.domainId;
  }
  if (governanceXml !== undefined && governanceP7s !== undefined && permissions) {
    checkSigned(governanceP7s, governanceXml, 'enclaves/governance.p7s', 'enclaves/governance.xml', permissions.pem);
  }

  // ---- identity CRL (optional; not part of sros2's layout) ----------------------------------------
  let crlPem: string | undefined;
  let revoked: Set<string> | undefined;
  const crl = read('public/crl.pem');
  if (crl.state === 'bad') problems.push(crl.problem);
  else if (crl.state === 'ok' && identity) {
    const c = checkCrl(crl.text, identity.pem);
    if (c.problem) problems.push(`public/crl.pem ${c.problem}`);
    else {
      crlPem = crl.text;
      revoked = c.revoked;
    }
  }

  // ---- enclaves --------------------------------------------------------------------------------
  const enclavesDir = `${root}enclaves`;
  const enclaveDirs = new Set<string>();
  for (const [name, entry] of entries) {
    if (entry.type === 'directory') continue;
    if (name === `${enclavesDir}/key.pem`) enclaveDirs.add('');
    else if (name.startsWith(`${enclavesDir}/`) && name.endsWith('/key.pem'))
      enclaveDirs.add(name.slice(enclavesDir.length + 1, -'/key.pem'.length));
    else if (name.startsWith(`${enclavesDir}/`) && name.endsWith('/permissions.p7s')) {
      // A folder with signed permissions and neither key nor certificate: a per-robot enclave (each robot
      // holds its own key), as this server exports one.
      const rel = name.slice(enclavesDir.length + 1, name.length - '/permissions.p7s'.length);
      if (rel && !entries.has(`${enclavesDir}/${rel}/key.pem`) && !entries.has(`${enclavesDir}/${rel}/cert.pem`)) enclaveDirs.add(rel);
    }
  }
  const enclaves: EnclaveMaterial[] = [];
  const perRobotEnclaves: PerRobotEnclaveMaterial[] = [];
  for (const rel of [...enclaveDirs].sort()) {
    const path = `/${rel}`;
    const dir = rel === '' ? 'enclaves/' : `enclaves/${rel}/`;
    const label = `enclave ${path}`;
    const before = problems.length;
    const nameProblem = enclaveNameProblem(path);
    if (nameProblem) problems.push(`${label}: invalid enclave name (${nameProblem})`);

    const file = (f: string): string | undefined => {
      const r = read(dir + f, f);
      if (r.state === 'ok') return r.text;
      problems.push(`${label}: ${r.state === 'missing' ? `${f} is missing` : r.problem}`);
      return undefined;
    };
    const perRobot = !entries.has(root + dir + 'key.pem') && !entries.has(root + dir + 'cert.pem');
    const certPem = perRobot ? undefined : file('cert.pem');
    const keyPem = perRobot ? undefined : file('key.pem');
    const permissionsXml = file('permissions.xml');
    const permissionsP7s = file('permissions.p7s');

    const cert = certPem !== undefined ? inspect(certPem, `${label}: cert.pem`) : undefined;
    if (cert && certPem !== undefined) {
      if (cert.isCa) problems.push(`${label}: cert.pem is a CA certificate (an enclave certificate must have CA:FALSE)`);
      if (identity && !signedBy(certPem, identity.pem))
        problems.push(`${label}: cert.pem is not signed by the identity CA (${identity.file})`);
      const v = validityProblem(cert.notBefore, cert.notAfter, now);
      if (v) problems.push(`${label}: cert.pem ${v}`);
      if (!sameDistinguishedName(cert.subject, `CN=${path}`))
        problems.push(`${label}: cert.pem has subject ${JSON.stringify(cert.subject)}, expected "CN=${path}" (the enclave name)`);
      if (keyPem !== undefined && !keyMatches(keyPem, certPem)) problems.push(`${label}: key.pem does not match cert.pem`);
      if (revoked?.has(canonicalSerial(cert.serialHex)))
        problems.push(`${label}: cert.pem (serial ${cert.serialHex}) is revoked by public/crl.pem`);
    }
    let validity: { notBefore: Date; notAfter: Date } | undefined;
    if (permissionsXml !== undefined) {
      const g = permissionsGrants(permissionsXml);
      if (g.problem) problems.push(`${label}: permissions.xml ${g.problem}`);
      for (const grant of g.grants ?? []) {
        const gl = `${label}: permissions.xml grant ${JSON.stringify(grant.name)}`;
        if (!grant.subjectName) problems.push(`${gl} has no <subject_name>`);
        else if (cert && !sameDistinguishedName(grant.subjectName, cert.subject))
          problems.push(`${gl}: subject_name ${JSON.stringify(grant.subjectName)} does not match the certificate subject ${JSON.stringify(cert.subject)}`);
        else if (perRobot && !sameDistinguishedName(grant.subjectName, `CN=${path}`))
          problems.push(`${gl}: subject_name ${JSON.stringify(grant.subjectName)} is not the enclave's subject "CN=${path}"`);
        const nb = grant.notBefore === undefined ? undefined : parseDdsDate(grant.notBefore);
        const na = grant.notAfter === undefined ? undefined : parseDdsDate(grant.notAfter);
        if (!nb || !na) problems.push(`${gl} has a missing or unreadable <validity>`);
        else {
          const v = validityProblem(nb, na, now);
          if (v) problems.push(`${gl} ${v}`);
          validity ??= { notBefore: nb, notAfter: na };
        }
      }
    }
    if (permissionsXml !== undefined && permissionsP7s !== undefined && permissions)
      checkSigned(permissionsP7s, permissionsXml, `${label}: permissions.p7s`, 'permissions.xml', permissions.pem);

    // Copies or symlinks sros2 puts in every enclave: when present, they must be this keystore's own.
    const sameCert = (f: string, ca: CertInfo | undefined, role: string): void => {
      if (!entries.has(root + dir + f) || !ca) return;
      const r = read(dir + f, f);
      if (r.state !== 'ok') {
        if (r.state === 'bad') problems.push(`${label}: ${r.problem}`);
        return;
      }
      let fp: string | undefined;
      try {
        fp = inspectCertificate(r.text).fingerprintSha256;
      } catch {
        fp = undefined;
      }
      if (fp !== ca.fingerprintSha256) problems.push(`${label}: ${f} is not the keystore's ${role} CA certificate`);
    };
    if (entries.has(root + dir + 'crl.pem') && identity) {
      const r = read(dir + 'crl.pem', 'crl.pem');
      if (r.state === 'bad') problems.push(`${label}: ${r.problem}`);
      else if (r.state === 'ok' && crl.state === 'ok') {
        if (r.text !== crl.text) problems.push(`${label}: crl.pem is not the keystore's public/crl.pem`);
      } else if (r.state === 'ok') {
        const c = checkCrl(r.text, identity.pem);
        if (c.problem) problems.push(`${label}: crl.pem ${c.problem}`);
        else if (cert && c.revoked?.has(canonicalSerial(cert.serialHex)))
          problems.push(`${label}: cert.pem (serial ${cert.serialHex}) is revoked by the enclave's crl.pem`);
      }
    }
    sameCert('identity_ca.cert.pem', idInfo, 'identity');
    sameCert('permissions_ca.cert.pem', permInfo, 'permissions');
    if (rel !== '' && entries.has(root + dir + 'governance.p7s') && governanceP7s !== undefined) {
      const r = read(dir + 'governance.p7s', 'governance.p7s');
      if (r.state === 'bad') problems.push(`${label}: ${r.problem}`);
      else if (r.state === 'ok' && r.text !== governanceP7s)
        problems.push(`${label}: governance.p7s is not the keystore's enclaves/governance.p7s`);
    }

    if (problems.length === before && certPem && keyPem && permissionsXml && permissionsP7s)
      enclaves.push({ path, certPem, keyPem, permissionsXml, permissionsP7s });
    else if (problems.length === before && perRobot && permissionsXml && permissionsP7s && validity)
      perRobotEnclaves.push({ path, permissionsXml, permissionsP7s, ...validity });
  }

  if (
    problems.length > 0 ||
    !identity ||
    !permissions ||
    governanceXml === undefined ||
    governanceP7s === undefined ||
    domainId === undefined
  ) {
    if (problems.length === 0) problems.push('the keystore is incomplete');
    return { problems };
  }
  const material: KeystoreMaterial = {
    identityCaCertPem: identity.pem,
    permissionsCaCertPem: permissions.pem,
    sharedCa,
    governanceXml,
    governanceP7s,
    domainId,
    enclaves,
  };
  if (perRobotEnclaves.length) material.perRobotEnclaves = perRobotEnclaves;
  if (identityCaKeyPem !== undefined) material.identityCaKeyPem = identityCaKeyPem;
  if (permissionsCaKeyPem !== undefined) material.permissionsCaKeyPem = permissionsCaKeyPem;
  return crlPem === undefined ? { material, problems } : { material, problems, crlPem };
}

export interface WriteSros2Options {
  /** Write `private/` with the CA keys present in the material. Without it, no `private/` at all. */
  includeCaKeys: boolean;
}

export interface WriteSros2Extras {
  /**
   * The identity CRL. sros2 has none; when given it is written as `public/crl.pem` and every enclave
   * gets a relative symlink `crl.pem` to it, which is where DDS (via rcl) looks for it.
   */
  crlPem?: string;
}

/** The top folder of an exported keystore archive. */
export const EXPORT_ROOT = 'keystore';

/**
 * Entries (for `writeTarGz`) laying out `material` exactly as sros2 does, under `keystore/`. Folders
 * 0755, files 0644, private keys 0600, symlinks relative (depth-adjusted per enclave).
 */
export function writeSros2Keystore(
  material: KeystoreMaterial,
  opts: WriteSros2Options,
  extras: WriteSros2Extras = {},
): TarInputEntry[] {
  const R = EXPORT_ROOT;
  const out: TarInputEntry[] = [];
  const dir = (path: string): void => void out.push({ path: `${R}/${path}`, type: 'directory', mode: 0o755 });
  const file = (path: string, content: string, mode = 0o644): void =>
    void out.push({ path: `${R}/${path}`, type: 'file', content, mode });
  const link = (path: string, target: string): void => void out.push({ path: `${R}/${path}`, type: 'symlink', target, mode: 0o777 });

  dir('public');
  if (material.sharedCa) {
    file('public/ca.cert.pem', material.identityCaCertPem);
    link('public/identity_ca.cert.pem', 'ca.cert.pem');
    link('public/permissions_ca.cert.pem', 'ca.cert.pem');
  } else {
    file('public/identity_ca.cert.pem', material.identityCaCertPem);
    file('public/permissions_ca.cert.pem', material.permissionsCaCertPem);
  }
  if (extras.crlPem !== undefined) file('public/crl.pem', extras.crlPem);

  if (opts.includeCaKeys) {
    const idKey = material.identityCaKeyPem;
    const permKey = material.permissionsCaKeyPem ?? (material.sharedCa ? idKey : undefined);
    if (idKey !== undefined || permKey !== undefined) {
      dir('private');
      if (material.sharedCa) {
        const key = idKey ?? permKey!;
        file('private/ca.key.pem', key, 0o600);
        link('private/identity_ca.key.pem', 'ca.key.pem');
        link('private/permissions_ca.key.pem', 'ca.key.pem');
      } else {
        if (idKey !== undefined) file('private/identity_ca.key.pem', idKey, 0o600);
        if (permKey !== undefined) file('private/permissions_ca.key.pem', permKey, 0o600);
      }
    }
  }

  dir('enclaves');
  file('enclaves/governance.xml', material.governanceXml);
  file('enclaves/governance.p7s', material.governanceP7s);

  const seen = new Set<string>();
  const all: (EnclaveMaterial | PerRobotEnclaveMaterial)[] = [...material.enclaves, ...(material.perRobotEnclaves ?? [])];
  for (const e of all.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const problem = enclaveNameProblem(e.path);
    if (problem) throw new Error(`writeSros2Keystore: enclave ${JSON.stringify(e.path)}: ${problem}`);
    if (seen.has(e.path)) throw new Error(`writeSros2Keystore: enclave ${e.path} appears twice`);
    seen.add(e.path);
    const segments = e.path === '/' ? [] : e.path.slice(1).split('/');
    for (let i = 1; i <= segments.length; i++) {
      const d = `enclaves/${segments.slice(0, i).join('/')}`;
      if (!seen.has(`dir:${d}`)) {
        seen.add(`dir:${d}`);
        dir(d);
      }
    }
    const base = segments.length === 0 ? 'enclaves' : `enclaves/${segments.join('/')}`;
    const up = '../'.repeat(segments.length); // from the enclave folder back to enclaves/
    if ('keyPem' in e) {
      file(`${base}/cert.pem`, e.certPem);
      file(`${base}/key.pem`, e.keyPem, 0o600);
    }
    file(`${base}/permissions.xml`, e.permissionsXml);
    file(`${base}/permissions.p7s`, e.permissionsP7s);
    link(`${base}/identity_ca.cert.pem`, `${up}../public/identity_ca.cert.pem`);
    link(`${base}/permissions_ca.cert.pem`, `${up}../public/permissions_ca.cert.pem`);
    if (segments.length > 0) link(`${base}/governance.p7s`, `${up}governance.p7s`);
    if (extras.crlPem !== undefined) link(`${base}/crl.pem`, `${up}../public/crl.pem`);
  }
  return out;
}
