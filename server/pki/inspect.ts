import { PkiError } from './errors.js';
import { type Asn1, OID, children, oidOf, stringOf, toPem } from './der.js';
import { type PrivateKeyInput, privateKeyObject } from './keys.js';
import { keyMatches, parseCertificate } from './certificate.js';

export interface CertificateInfo {
  /** RFC 4514 form, most specific RDN first: `CN=/talker_listener/talker`. */
  subject: string;
  subjectCN: string;
  issuer: string;
  /** Upper-case hex without sign byte or colons, as `openssl x509 -serial` prints it. */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  /** `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprintSha256: string;
  isCa: boolean;
  publicKeyPem: string;
}

const SHORT_NAMES = new Map<string, string>([
  [OID.commonName, 'CN'],
  ['2.5.4.6', 'C'],
  ['2.5.4.7', 'L'],
  ['2.5.4.8', 'ST'],
  ['2.5.4.10', 'O'],
  ['2.5.4.11', 'OU'],
  ['2.5.4.5', 'serialNumber'],
  ['0.9.2342.19200300.100.1.25', 'DC'],
  ['0.9.2342.19200300.100.1.1', 'UID'],
  ['1.2.840.113549.1.9.1', 'emailAddress'],
]);

function escapeValue(value: string): string {
  return value
    .replace(/[\\,+"<>;=]/g, (c) => '\\' + c)
    .replace(/^[ #]/, (c) => '\\' + c)
    .replace(/ $/, '\\ ');
}

function attributes(name: Asn1): Array<Array<{ type: string; value: string }>> {
  return children(name).map((rdn) =>
    children(rdn).map((atv) => {
      const [type, value] = children(atv);
      const dotted = oidOf(type) ?? '?';
      return { type: dotted, value: stringOf(value) ?? '' };
    }),
  );
}

function formatName(name: Asn1): string {
  return attributes(name)
    .reverse()
    .map((rdn) => rdn.map((a) => `${SHORT_NAMES.get(a.type) ?? a.type}=${escapeValue(a.value)}`).join('+'))
    .join(',');
}

export function inspectCertificate(pem: string): CertificateInfo {
  const cert = parseCertificate(pem);
  const cns = attributes(cert.subject)
    .flat()
    .filter((a) => a.type === OID.commonName);
  return {
    subject: formatName(cert.subject),
    subjectCN: cns[cns.length - 1]?.value ?? '',
    issuer: formatName(cert.issuer),
    serialHex: cert.serialBytes.toString('hex').toUpperCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    fingerprintSha256: cert.x509.fingerprint256,
    isCa: cert.x509.ca,
    publicKeyPem: toPem('PUBLIC KEY', cert.spkiDer),
  };
}

/** Whether the private key belongs to the certificate (compares the public halves). */
export function keyMatchesCertificate(keyPem: PrivateKeyInput, certPem: string): boolean {
  return keyMatches(parseCertificate(certPem), privateKeyObject(keyPem));
}

/**
 * Whether caCertPem's key signed certPem. A cryptographic check: names prove nothing here, since
 * every sros2 CA is called CN=sros2CA.
 */
export function isSignedBy(certPem: string, caCertPem: string): boolean {
  const cert = parseCertificate(certPem);
  const ca = parseCertificate(caCertPem, 'CA certificate');
  try {
    return cert.x509.verify(ca.x509.publicKey);
  } catch (cause) {
    throw new PkiError('certificate signature could not be checked', { cause });
  }
}
