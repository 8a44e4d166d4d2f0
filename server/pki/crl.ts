import { PkiError } from './errors.js';
import { type Asn1, OID, ECDSA_WITH_SHA256, ctx, ctxPrim, extension, seq, smallInt, time, toPem, unsignedInt } from './der.js';
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
