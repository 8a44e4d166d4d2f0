import crypto from 'node:crypto';
import forge from 'node-forge';
import { PkiError } from './errors.js';
import {
  type Asn1,
  OID,
  ECDSA_WITH_SHA256,
  bytesOf,
  children,
  ctx,
  ctxPrim,
  extension,
  fromPem,
  isUniversal,
  oidOf,
  parseDer,
  seq,
  smallInt,
  time,
  toDer,
  toPem,
  unsignedInt,
} from './der.js';
import { type PrivateKeyInput, privateKeyObject, requireEcSigningKey } from './keys.js';
import { keyMatches, parseCertificate } from './certificate.js';
import { signTbs } from './x509.js';

export interface RevokedCertificate {
  /** Hex serial as inspectCertificate or `openssl x509 -serial` show it (colons allowed). */
  serialHex: string;
  revokedAt: Date;
}

export interface CrlSpec {
  issuer: { certPem: string; keyPem: PrivateKeyInput };
  revoked: RevokedCertificate[];
  thisUpdate: Date;
  nextUpdate: Date;
  /** Monotonically increasing per issuer (RFC 5280 5.2.3). */
  crlNumber: number | bigint;
}

function serialBytes(serialHex: string): Buffer {
  const hex = serialHex.replace(/:/g, '');
  if (!/^[0-9a-fA-F]{1,40}$/.test(hex)) throw new PkiError(`"${serialHex}" is not a hexadecimal certificate serial`);
  return Buffer.from(hex.length % 2 === 0 ? hex : '0' + hex, 'hex');
}

function crlNumberBytes(n: number | bigint): Buffer {
  const value = typeof n === 'bigint' ? n : Number.isSafeInteger(n) ? BigInt(n) : -1n;
  if (value < 0n) throw new PkiError('CRL number must be a non-negative integer');
  const hex = value.toString(16);
  return Buffer.from(hex.length % 2 === 0 ? hex : '0' + hex, 'hex');
}

/** Issues an X.509 v2 CRL (PEM) signed ecdsa-with-SHA256 by the issuing CA. */
export function issueCrl(spec: CrlSpec): string {
  const issuer = parseCertificate(spec.issuer.certPem, 'CRL issuer certificate');
  const key = privateKeyObject(spec.issuer.keyPem, 'CRL issuer key');
  requireEcSigningKey(key, 'CRL issuer key');
  if (!issuer.x509.ca) throw new PkiError('CRL issuer certificate is not a CA certificate');
  if (!keyMatches(issuer, key)) throw new PkiError('CRL issuer key does not match its certificate');
  if (spec.nextUpdate.getTime() <= spec.thisUpdate.getTime()) throw new PkiError('CRL nextUpdate must be later than thisUpdate');

  const fields: Asn1[] = [smallInt(1), ECDSA_WITH_SHA256, issuer.subject, time(spec.thisUpdate), time(spec.nextUpdate)];
  // RFC 5280 5.1.2.6: an empty list is omitted, not encoded as an empty SEQUENCE.
  if (spec.revoked.length > 0) {
    fields.push(seq(...spec.revoked.map((r) => seq(unsignedInt(serialBytes(r.serialHex)), time(r.revokedAt)))));
  }
  fields.push(
    ctx(
      0,
      seq(
        extension(OID.authorityKeyIdentifier, false, seq(ctxPrim(0, issuer.keyIdForChildren))),
        extension(OID.cRLNumber, false, unsignedInt(crlNumberBytes(spec.crlNumber))),
      ),
    ),
  );
  return toPem('X509 CRL', signTbs(seq(...fields), key));
}

const SIGNATURE_DIGESTS = new Map<string, string>([
  ['1.2.840.10045.4.3.2', 'sha256'], // ecdsa-with-SHA256
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
  ['1.2.840.113549.1.1.11', 'sha256'], // sha256WithRSAEncryption
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
]);

/** A serial as upper-case hex without leading zero bytes: the form `inspectCertificate` gives. */
export function canonicalSerial(hex: string): string {
  return hex.replace(/:/g, '').toUpperCase().replace(/^(00)+(?=.)/, '');
}

/**
 * Reads a PEM CRL that must be signed by `caCertPem` (signature checked with Node's crypto) and returns
 * the revoked serials in canonical form. Throws PkiError for anything unreadable or not signed by the CA.
 */
export function readCrl(crlPem: string, caCertPem: string): { revokedSerials: Set<string>; nextUpdate?: Date } {
  const der = fromPem(crlPem, 'X509 CRL', 'CRL');
  let root: Asn1;
  try {
    root = parseDer(der);
  } catch {
    throw new PkiError('CRL is not readable DER');
  }
  if (!toDer(root).equals(der)) throw new PkiError('CRL is not DER-encoded');
  const [tbs, alg, sig] = children(root);
  const digest = SIGNATURE_DIGESTS.get(oidOf(children(alg)[0]) ?? '');
  if (!tbs || !sig) throw new PkiError('CRL is not a CertificateList');
  if (!digest) throw new PkiError('CRL uses an unsupported signature algorithm');
  const ca = parseCertificate(caCertPem, 'CRL issuer certificate');
  const signature = bytesOf(sig).subarray(1); // BIT STRING: first byte is the unused-bits count
  if (!crypto.verify(digest, toDer(tbs), ca.x509.publicKey, signature)) throw new PkiError('CRL is not signed by the identity CA');
  const fields = children(tbs);
  let i = isUniversal(fields[0], forge.asn1.Type.INTEGER) ? 1 : 0; // optional version
  i += 3; // signature algorithm, issuer, thisUpdate
  let nextUpdate: Date | undefined;
  const next = fields[i];
  if (isUniversal(next, forge.asn1.Type.UTCTIME) || isUniversal(next, forge.asn1.Type.GENERALIZEDTIME)) {
    const text = bytesOf(next).toString('latin1');
    nextUpdate = isUniversal(next, forge.asn1.Type.UTCTIME) ? forge.asn1.utcTimeToDate(text) : forge.asn1.generalizedTimeToDate(text);
    i++;
  }
  const revokedSerials = new Set<string>();
  const list = fields[i];
  if (isUniversal(list, forge.asn1.Type.SEQUENCE)) {
    for (const entry of children(list)) revokedSerials.add(canonicalSerial(bytesOf(children(entry)[0]).toString('hex')));
  }
  return { revokedSerials, ...(nextUpdate ? { nextUpdate } : {}) };
}
