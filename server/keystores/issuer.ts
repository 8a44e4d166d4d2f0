import { generateKeyPair, inspectCertificate, issueCertificate, signSmime } from '../pki/index.js';
import { defaultPermissions, formatValidityDate, policyToPermissions } from '../policy/permissions.js';

/** A CA able to sign: certificate and clear private key, only ever in memory for one operation. */
export interface SigningCa {
  certPem: string;
  keyPem: string;
}

export interface IssuingKeystore {
  identityCa: SigningCa;
  permissionsCa: SigningCa;
  domainId: number;
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedEnclave extends Validity {
  certPem: string;
  keyPem: string;
  serial: string;
  permissionsXml: string;
  permissionsP7s: string;
}

const DAY_MS = 86_400_000;

/**
 * The enclave validity window: starts `backdateSeconds` in the past (robots without a real-time clock
 * boot behind), lasts `validityDays`, and never outlives the identity CA (a chain would not verify).
 */
export function enclaveValidity(now: Date, validityDays: number, backdateSeconds: number, caNotAfter: Date): Validity {
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - backdateSeconds * 1000);
  const wanted = notBefore.getTime() + backdateSeconds * 1000 + validityDays * DAY_MS;
  return { notBefore, notAfter: new Date(Math.min(wanted, caNotAfter.getTime())) };
}

// The allow-all permissions differ between enclaves only in the path and the dates, so the transform runs
// once per domain id and each enclave gets a substitution (the transform is most of the cost otherwise).
const PLACEHOLDER = { path: '/enclave_path_placeholder', notBefore: new Date(Date.UTC(2001, 0, 1, 1, 1, 1)), notAfter: new Date(Date.UTC(2002, 1, 2, 2, 2, 2)) };
const defaultTemplates = new Map<number, string>();

export function defaultPermissionsFast(path: string, v: Validity, domainId: number): string {
  let template = defaultTemplates.get(domainId);
  if (template === undefined) {
    template = defaultPermissions(PLACEHOLDER.path, PLACEHOLDER.notBefore, PLACEHOLDER.notAfter, domainId);
    defaultTemplates.set(domainId, template);
  }
  return template
    .replaceAll(PLACEHOLDER.path, path)
    .replaceAll(formatValidityDate(PLACEHOLDER.notBefore), formatValidityDate(v.notBefore))
    .replaceAll(formatValidityDate(PLACEHOLDER.notAfter), formatValidityDate(v.notAfter));
}

/** permissions.xml for an enclave: from its policy, or sros2's allow-all default when there is none. */
export function permissionsFor(ks: Pick<IssuingKeystore, 'domainId'>, path: string, policyXml: string | null, v: Validity): string {
  return policyXml === null
    ? defaultPermissionsFast(path, v, ks.domainId)
    : policyToPermissions(policyXml, { enclavePath: path, notBefore: v.notBefore, notAfter: v.notAfter, domainId: ks.domainId, discoveryRule: true });
}

/** Signs permissions with the permissions CA (never the identity CA: DDS checks the signer). */
export function signPermissions(ks: IssuingKeystore, permissionsXml: string, now: Date): string {
  return signSmime(permissionsXml, ks.permissionsCa, now);
}

/**
 * A new key, certificate `CN=<path>` and signed permissions: what `ros2 security create_enclave` makes.
 * `permissions` is the permissions.xml for validity `v` (the caller decides where it comes from and whether
 * the caller may sign it).
 */
export function issueEnclave(ks: IssuingKeystore, path: string, permissionsXml: string, v: Validity, now: Date): IssuedEnclave {
  const key = generateKeyPair();
  const certPem = issueCertificate({
    subjectCN: path,
    publicKeyPem: key.publicKeyPem,
    issuer: { certPem: ks.identityCa.certPem, keyPem: ks.identityCa.keyPem },
    notBefore: v.notBefore,
    notAfter: v.notAfter,
    profile: 'enclave',
  });
  return {
    certPem,
    keyPem: key.privateKeyPem,
    serial: inspectCertificate(certPem).serialHex,
    notBefore: v.notBefore,
    notAfter: v.notAfter,
    permissionsXml,
    permissionsP7s: signPermissions(ks, permissionsXml, now),
  };
}

/**
 * Imported permissions keep every rule; only each grant's `<validity>` follows the new certificate.
 * (Regenerating them from a default would silently widen what the enclave may do.)
 */
export function withValidity(permissionsXml: string, v: Validity): string {
  const nb = formatValidityDate(v.notBefore);
  const na = formatValidityDate(v.notAfter);
  return permissionsXml
    .replace(/(<not_before>)[^<]*(<\/not_before>)/g, `$1${nb}$2`)
    .replace(/(<not_after>)[^<]*(<\/not_after>)/g, `$1${na}$2`);
}
