import crypto, { type KeyObject } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import forge from 'node-forge';
import { PkiError } from './errors.js';
import {
  type Asn1,
  OID,
  UNIVERSAL,
  TYPE,
  ECDSA_WITH_SHA256,
  bool,
  cnName,
  ctx,
  ctxPrim,
  extension,
  octets,
  oid,
  parseDer,
  seq,
  signedEnvelope,
  smallInt,
  time,
  toDer,
  toPem,
  unsignedInt,
} from './der.js';
import { type PrivateKeyInput, type PublicKeyInput, privateKeyObject, requireEcSigningKey, spkiDer } from './keys.js';
import { keyIdentifier, keyMatches, parseCertificate } from './certificate.js';
import { randomBytes } from './random.js';

/**
 * - `ca`: the sros2 identity/permissions CA (basicConstraints critical CA:TRUE pathlen:1, nothing else).
 * - `enclave`: an sros2 participant certificate (basicConstraints non-critical CA:FALSE, nothing else).
 * - `tls-ca` / `tls-server`: the server's own HTTPS chain, with the extensions TLS clients expect.
 */
export type CertificateProfile = 'ca' | 'enclave' | 'tls-ca' | 'tls-server';

export interface CertificateSpec {
  subjectCN: string;
  publicKeyPem: PublicKeyInput;
  /** Without certPem the certificate is self-signed with keyPem (which must match publicKeyPem). */
  issuer: { certPem?: string; keyPem: PrivateKeyInput };
  notBefore: Date;
  notAfter: Date;
  profile: CertificateProfile;
  /** tls-server only. */
  dnsNames?: string[];
  /** tls-server only; IPv4 or IPv6. */
  ipAddresses?: string[];
  /** Unsigned big-endian; default 20 random bytes with the top bit clear. */
  serial?: Buffer;
}

/** `bytes` random bytes (default 20), top bit cleared (positive); never a leading zero byte so it keeps its length. */
export function randomSerial(bytes = 20): Buffer {
  for (;;) {
    const serial = randomBytes(bytes);
    serial[0]! &= 0x7f;
    if (serial[0] !== 0) return serial;
  }
}

function serialFrom(serial: Buffer | undefined): Asn1 {
  if (serial === undefined) return unsignedInt(randomSerial());
  if (serial.every((b) => b === 0)) throw new PkiError('certificate serial must be positive');
  const value = unsignedInt(serial);
  // RFC 5280 4.1.2.2, counting the sign byte a high first bit needs.
  if ((value.value as string).length > 20) throw new PkiError('certificate serial must fit in 20 octets');
  return value;
}

// Constant extensions of the sros2 profiles, laid out once.
const CA_EXTENSIONS = [extension(OID.basicConstraints, true, seq(bool(true), smallInt(1)))];
const ENCLAVE_EXTENSIONS = [extension(OID.basicConstraints, false, seq())];

// keyUsage BIT STRINGs in DER (trailing zero bits dropped, their count first):
// digitalSignature(0) = 1 bit used; digitalSignature(0) keyCertSign(5) cRLSign(6) = 7 bits used.
const KEY_USAGE_DIGITAL_SIGNATURE = forge.asn1.create(UNIVERSAL, TYPE.BITSTRING, false, '\x07\x80');
const KEY_USAGE_CA = forge.asn1.create(UNIVERSAL, TYPE.BITSTRING, false, '\x01\x86');

/** IPv4 or IPv6 text to the 4 or 16 octets of a GeneralName iPAddress. */
export function ipAddressBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  if (!isIPv6(ip) || ip.includes('%')) throw new PkiError(`"${ip}" is not an IP address`);
  let text = ip;
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // Dotted IPv4 tail (::ffff:192.0.2.1): rewrite it as the two hex groups it stands for.
    const o = text.slice(lastColon + 1).split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const groups = (part: string | undefined): number[] =>
    part === undefined || part === '' ? [] : part.split(':').map((g) => parseInt(g, 16));
  const [head, tail] = text.split('::');
  const front = groups(head);
  const back = groups(tail);
  const words = tail === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function subjectAltName(dnsNames: string[], ipAddresses: string[]): Asn1 {
  const names: Asn1[] = [];
  for (const dns of dnsNames) {
    // IA5String: internationalised names must arrive already in their xn-- form.
    if (!/^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/.test(dns)) {
      throw new PkiError(`"${dns}" is not a valid DNS name`);
    }
    names.push(ctxPrim(2, Buffer.from(dns, 'ascii')));
  }
  for (const ip of ipAddresses) names.push(ctxPrim(7, ipAddressBytes(ip)));
  return seq(...names);
}

function tlsExtensions(spec: CertificateSpec, subjectKeyId: Buffer, authorityKeyId: Buffer): Asn1[] {
  const dnsNames = spec.dnsNames ?? [];
  const ipAddresses = spec.ipAddresses ?? [];
  const keyIds = [
    extension(OID.subjectKeyIdentifier, false, octets(subjectKeyId)),
    extension(OID.authorityKeyIdentifier, false, seq(ctxPrim(0, authorityKeyId))),
  ];
  if (spec.profile === 'tls-ca') {
    return [
      extension(OID.basicConstraints, true, seq(bool(true), smallInt(0))),
      extension(OID.keyUsage, true, KEY_USAGE_CA),
      ...keyIds,
    ];
  }
  if (dnsNames.length + ipAddresses.length === 0) {
    throw new PkiError('a tls-server certificate needs at least one DNS name or IP address');
  }
  return [
    extension(OID.basicConstraints, true, seq()),
    extension(OID.keyUsage, true, KEY_USAGE_DIGITAL_SIGNATURE),
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth))),
    extension(OID.subjectAltName, false, subjectAltName(dnsNames, ipAddresses)),
    ...keyIds,
  ];
}

function checkSpec(spec: CertificateSpec): void {
  if (!['ca', 'enclave', 'tls-ca', 'tls-server'].includes(spec.profile)) {
    throw new PkiError(`unknown certificate profile "${String(spec.profile)}"`);
  }
  if (typeof spec.subjectCN !== 'string' || spec.subjectCN.length === 0 || spec.subjectCN.length > 1024) {
    throw new PkiError('certificate subject CN must be a non-empty string');
  }
  const nb = spec.notBefore.getTime();
  const na = spec.notAfter.getTime();
  if (!Number.isFinite(nb) || !Number.isFinite(na)) throw new PkiError('certificate validity dates are invalid');
  if (Math.floor(na / 1000) <= Math.floor(nb / 1000)) throw new PkiError('certificate notAfter must be later than notBefore');
  if (spec.profile !== 'tls-server' && ((spec.dnsNames?.length ?? 0) > 0 || (spec.ipAddresses?.length ?? 0) > 0)) {
    throw new PkiError('dnsNames and ipAddresses are only allowed in tls-server certificates');
  }
}

/** Signs a TBSCertificate/TBSCertList with an EC key and wraps it (Certificate and CertificateList share the shape). */
export function signTbs(tbs: Asn1, key: KeyObject): Buffer {
  const signature = crypto.sign('sha256', toDer(tbs), { key, dsaEncoding: 'der' });
  return toDer(signedEnvelope(tbs, ECDSA_WITH_SHA256, signature));
}

/** Issues an X.509 v3 certificate (PEM). */
export function issueCertificate(spec: CertificateSpec): string {
  checkSpec(spec);
  const subjectSpki = spkiDer(spec.publicKeyPem, 'subject public key');
  const key = privateKeyObject(spec.issuer.keyPem, 'issuer key');
  requireEcSigningKey(key, 'issuer key');
  const subject = cnName(spec.subjectCN);
  const spki = parseDer(subjectSpki);

  let issuerName: Asn1;
  let authorityKeyId: Buffer | undefined;
  if (spec.issuer.certPem !== undefined) {
    const issuer = parseCertificate(spec.issuer.certPem, 'issuer certificate');
    if (!issuer.x509.ca) throw new PkiError('issuer certificate is not a CA certificate');
    if (!keyMatches(issuer, key)) throw new PkiError('issuer key does not match the issuer certificate');
    // The issuer field must be the CA's subject exactly as encoded (parsed DER re-encodes verbatim).
    issuerName = issuer.subject;
    authorityKeyId = issuer.keyIdForChildren;
  } else {
    if (!spkiDer(key).equals(subjectSpki)) {
      throw new PkiError('a self-signed certificate needs the public key of its own signing key');
    }
    issuerName = subject;
  }

  let extensions: Asn1[];
  if (spec.profile === 'ca') extensions = CA_EXTENSIONS;
  else if (spec.profile === 'enclave') extensions = ENCLAVE_EXTENSIONS;
  else {
    const subjectKeyId = keyIdentifier(spki);
    extensions = tlsExtensions(spec, subjectKeyId, authorityKeyId ?? subjectKeyId);
  }

  const tbs = seq(
    ctx(0, smallInt(2)),
    serialFrom(spec.serial),
    ECDSA_WITH_SHA256,
    issuerName,
    seq(time(spec.notBefore), time(spec.notAfter)),
    subject,
    spki,
    ctx(3, seq(...extensions)),
  );
  return toPem('CERTIFICATE', signTbs(tbs, key));
}
