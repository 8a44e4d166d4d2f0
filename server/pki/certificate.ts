import crypto, { X509Certificate, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { PkiError } from './errors.js';
import {
  type Asn1,
  OID,
  TYPE,
  bytesOf,
  children,
  fromPem,
  isContext,
  oidOf,
  parseDer,
  toDer,
} from './der.js';

/**
 * A certificate parsed twice: by Node (OpenSSL) for signature checks and key comparison, and by
 * forge for the raw pieces Node does not expose (the encoded names, serial, SPKI, extensions).
 */
export interface ParsedCertificate {
  der: Buffer;
  x509: X509Certificate;
  /** The whole Certificate; re-encodes to `der` (DER input round-trips exactly through forge). */
  node: Asn1;
  serial: Asn1;
  issuer: Asn1;
  subject: Asn1;
  spki: Asn1;
  /** Unsigned big-endian serial (no sign byte). */
  serialBytes: Buffer;
  issuerDer: Buffer;
  subjectDer: Buffer;
  spkiDer: Buffer;
  notBefore: Date;
  notAfter: Date;
  subjectKeyId: Buffer | undefined;
  /** What an authorityKeyIdentifier pointing at this certificate should carry. */
  keyIdForChildren: Buffer;
  /** KeyObjects already checked against this certificate. */
  matchingKeys: WeakSet<KeyObject>;
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents. */
export function keyIdentifier(spki: Asn1): Buffer {
  const keyBits = bytesOf(children(spki)[1]).subarray(1);
  return crypto.createHash('sha1').update(keyBits).digest();
}

function timeOf(node: Asn1 | undefined): Date {
  const text = bytesOf(node).toString('latin1');
  if (node?.type === TYPE.UTCTIME) return forge.asn1.utcTimeToDate(text);
  if (node?.type === TYPE.GENERALIZEDTIME) return forge.asn1.generalizedTimeToDate(text);
  throw new Error('bad time');
}

function parse(der: Buffer, what: string): ParsedCertificate {
  let x509: X509Certificate;
  let node: Asn1;
  try {
    x509 = new X509Certificate(der);
    node = parseDer(der);
  } catch (cause) {
    throw new PkiError(`${what} is not a valid X.509 certificate`, { cause });
  }
  // Names and the certificate itself are re-emitted from the parsed tree (issuer fields, embedded
  // signer certificates); that is only verbatim for DER, so refuse anything else up front.
  if (!toDer(node).equals(der)) throw new PkiError(`${what} is not DER-encoded`);
  try {
    const tbs = children(children(node)[0]);
    const fields = isContext(tbs[0], 0) ? tbs.slice(1) : tbs;
    const [serial, , issuer, validity, subject, spki] = fields;
    if (serial === undefined || issuer === undefined || subject === undefined || spki === undefined) throw new Error('short');
    const [notBefore, notAfter] = children(validity);
    let subjectKeyId: Buffer | undefined;
    const extensionsNode = fields.find((f) => isContext(f, 3));
    for (const ext of children(children(extensionsNode)[0])) {
      const parts = children(ext);
      if (oidOf(parts[0]) === OID.subjectKeyIdentifier) {
        // extnValue is an OCTET STRING wrapping the DER of the KeyIdentifier OCTET STRING.
        subjectKeyId = bytesOf(parseDer(bytesOf(parts[parts.length - 1])));
      }
    }
    const serialRaw = bytesOf(serial);
    const serialBytes = serialRaw.length > 1 && serialRaw[0] === 0 ? serialRaw.subarray(1) : serialRaw;
    return {
      der,
      x509,
      node,
      serial,
      issuer,
      subject,
      spki,
      serialBytes,
      issuerDer: toDer(issuer),
      subjectDer: toDer(subject),
      spkiDer: toDer(spki),
      notBefore: timeOf(notBefore),
      notAfter: timeOf(notAfter),
      subjectKeyId,
      keyIdForChildren: subjectKeyId ?? keyIdentifier(spki),
      matchingKeys: new WeakSet(),
    };
  } catch (cause) {
    throw new PkiError(`${what} has an unexpected structure`, { cause });
  }
}

// CA certificates are parsed on every issuance/signature; parse each PEM once.
const CACHE_SIZE = 256;
const cache = new Map<string, ParsedCertificate>();

export function parseCertificate(pem: string, what = 'certificate'): ParsedCertificate {
  const cached = cache.get(pem);
  if (cached !== undefined) return cached;
  const parsed = parse(fromPem(pem, 'CERTIFICATE', what), what);
  if (cache.size >= CACHE_SIZE) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
  cache.set(pem, parsed);
  return parsed;
}

export function parseCertificateDer(der: Buffer, what = 'certificate'): ParsedCertificate {
  return parse(der, what);
}

export function keyMatches(cert: ParsedCertificate, key: KeyObject): boolean {
  if (cert.matchingKeys.has(key)) return true;
  const matches = cert.x509.checkPrivateKey(key);
  if (matches) cert.matchingKeys.add(key);
  return matches;
}
