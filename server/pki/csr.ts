import crypto, { type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { PkiError } from './errors.js';
import { type Asn1, OID, bytesOf, children, fromPem, isContext, isUniversal, oidOf, parseDer, toDer } from './der.js';

/** What a checked certificate signing request tells: the key it proves possession of. */
export interface CheckedCsr {
  publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo exactly as the CSR carries it. */
  spkiDer: Buffer;
  /** SHA-256 of `spkiDer`, lower-case hex: the key's identity for freshness checks. */
  spkiSha256: string;
}

const invalid = (message: string, cause?: unknown) => new PkiError(message, { code: 'invalid-csr', cause });

/**
 * Reads a PEM PKCS#10 request (RFC 2986) and checks it is what a per-robot enclave needs: version 0, an EC
 * P-256 key, and a signature ecdsa-with-SHA256 over certificationRequestInfo by that very key (proof of
 * possession), verified by Node's crypto. The subject and attributes are read past, never used: the
 * certificate's subject is the enclave's, decided by the server.
 */
export function readCsr(pem: string): CheckedCsr {
  const der = fromPem(pem, 'CERTIFICATE REQUEST', 'csr');
  let root: Asn1;
  try {
    root = parseDer(der);
  } catch (cause) {
    throw invalid('csr is not readable DER', cause);
  }
  if (!toDer(root).equals(der)) throw invalid('csr is not DER-encoded');
  const [info, algorithm, signature] = children(root);
  if (!isUniversal(info, forge.asn1.Type.SEQUENCE) || !isUniversal(signature, forge.asn1.Type.BITSTRING) || children(root).length !== 3) {
    throw invalid('csr is not a PKCS#10 CertificationRequest');
  }
  const [version, subject, spki, attributes] = children(info);
  if (!isUniversal(version, forge.asn1.Type.INTEGER) || bytesOf(version).length !== 1 || bytesOf(version)[0] !== 0) {
    throw invalid('csr version must be 0 (PKCS#10 v1)');
  }
  if (!isUniversal(subject, forge.asn1.Type.SEQUENCE) || !isUniversal(spki, forge.asn1.Type.SEQUENCE) || !isContext(attributes, 0)) {
    throw invalid('csr is not a PKCS#10 CertificationRequest');
  }
  const spkiDer = toDer(spki);
  let publicKey: KeyObject;
  try {
    publicKey = crypto.createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (cause) {
    throw invalid('csr public key is not readable', cause);
  }
  if (publicKey.asymmetricKeyType !== 'ec' || publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw invalid(`csr key must be EC P-256 (got ${publicKey.asymmetricKeyType === 'ec' ? `EC ${publicKey.asymmetricKeyDetails?.namedCurve ?? '?'}` : (publicKey.asymmetricKeyType ?? 'unknown')})`);
  }
  if (oidOf(children(algorithm)[0]) !== OID.ecdsaWithSha256 || children(algorithm).length !== 1) {
    throw invalid('csr must be signed ecdsa-with-SHA256');
  }
  const sig = bytesOf(signature);
  // BIT STRING: the first byte counts unused bits, which a DER ECDSA signature never has.
  if (sig.length < 2 || sig[0] !== 0) throw invalid('csr signature is malformed');
  let ok: boolean;
  try {
    ok = crypto.verify('sha256', toDer(info), { key: publicKey, dsaEncoding: 'der' }, sig.subarray(1));
  } catch (cause) {
    throw invalid('csr signature is malformed', cause);
  }
  if (!ok) throw invalid('csr signature does not verify with its own key (no proof of possession)');
  return { publicKey, spkiDer, spkiSha256: crypto.createHash('sha256').update(spkiDer).digest('hex') };
}
