/**
 * DER layout on top of node-forge's ASN.1 layer. forge is used only to arrange and (de)serialise
 * structures; every key and signature comes from node:crypto (forge has no EC support).
 *
 * forge represents byte strings as "binary" JS strings (one char per byte); the helpers here
 * convert at the edges so the rest of the module deals in Buffers.
 */
import forge from 'node-forge';
import { PkiError } from './errors.js';

const { asn1 } = forge;
export type Asn1 = forge.asn1.Asn1;

const U = asn1.Class.UNIVERSAL;
const CTX = asn1.Class.CONTEXT_SPECIFIC;
const T = asn1.Type;
export { U as UNIVERSAL, T as TYPE };

export const OID = {
  commonName: '2.5.4.3',
  ecPublicKey: '1.2.840.10045.2.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  ecdsaWithSha512: '1.2.840.10045.4.3.4',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  sha384WithRsa: '1.2.840.113549.1.1.12',
  sha512WithRsa: '1.2.840.113549.1.1.13',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  data: '1.2.840.113549.1.7.1',
  signedData: '1.2.840.113549.1.7.2',
  contentType: '1.2.840.113549.1.9.3',
  messageDigest: '1.2.840.113549.1.9.4',
  signingTime: '1.2.840.113549.1.9.5',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  cRLNumber: '2.5.29.20',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
} as const;

// forge's typings only declare the legacy boolean argument of fromDer.
const fromDerWithOptions = asn1.fromDer as unknown as (
  bytes: string,
  options: { strict: boolean; parseAllBytes: boolean; decodeBitStrings: boolean },
) => Asn1;

/** Parses DER exactly: no trailing bytes, BIT STRING contents kept raw (so re-encoding is byte-identical). */
export function parseDer(der: Buffer): Asn1 {
  return fromDerWithOptions(der.toString('latin1'), { strict: true, parseAllBytes: true, decodeBitStrings: false });
}

export function toDer(node: Asn1): Buffer {
  return Buffer.from(asn1.toDer(node).getBytes(), 'latin1');
}

export const seq = (...children: Asn1[]): Asn1 => asn1.create(U, T.SEQUENCE, true, children);
export const set = (...children: Asn1[]): Asn1 => asn1.create(U, T.SET, true, children);
/** [n] EXPLICIT (or IMPLICIT for a constructed type: pass the inner children). */
export const ctx = (n: number, ...children: Asn1[]): Asn1 => asn1.create(CTX, n as forge.asn1.Type, true, children);
/** [n] IMPLICIT primitive, e.g. GeneralName dNSName / iPAddress. */
export const ctxPrim = (n: number, bytes: Buffer): Asn1 =>
  asn1.create(CTX, n as forge.asn1.Type, false, bytes.toString('latin1'));

const oidCache = new Map<string, string>();
export function oid(dotted: string): Asn1 {
  let bytes = oidCache.get(dotted);
  if (bytes === undefined) {
    bytes = asn1.oidToDer(dotted).getBytes();
    oidCache.set(dotted, bytes);
  }
  return asn1.create(U, T.OID, false, bytes);
}
export const nul = (): Asn1 => asn1.create(U, T.NULL, false, '');
export const bool = (v: boolean): Asn1 => asn1.create(U, T.BOOLEAN, false, v ? '\xff' : '\x00');
export const octets = (bytes: Buffer): Asn1 => asn1.create(U, T.OCTETSTRING, false, bytes.toString('latin1'));
/** BIT STRING with no unused bits (signatures, key bits). */
export const bits = (bytes: Buffer): Asn1 => asn1.create(U, T.BITSTRING, false, '\x00' + bytes.toString('latin1'));
export const utf8 = (s: string): Asn1 => asn1.create(U, T.UTF8, false, Buffer.from(s, 'utf8').toString('latin1'));

/** INTEGER from a small non-negative JS number. */
export function smallInt(n: number): Asn1 {
  return asn1.create(U, T.INTEGER, false, asn1.integerToDer(n).getBytes());
}

/** INTEGER from unsigned big-endian magnitude bytes (a serial number): minimal, always positive. */
export function unsignedInt(magnitude: Buffer): Asn1 {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  let bytes = magnitude.subarray(start);
  if (bytes.length === 0) bytes = Buffer.alloc(1);
  const value = (bytes[0]! & 0x80) !== 0 ? Buffer.concat([Buffer.alloc(1), bytes]) : bytes;
  return asn1.create(U, T.INTEGER, false, value.toString('latin1'));
}

/**
 * RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 (and before 1950), always
 * whole seconds in UTC with a Z.
 */
export function time(date: Date): Asn1 {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new PkiError('invalid date');
  const year = date.getUTCFullYear();
  if (year < 1000 || year > 9999) throw new PkiError(`date ${date.toISOString()} cannot be encoded in a certificate`);
  const whole = new Date(Math.floor(ms / 1000) * 1000);
  return year >= 1950 && year < 2050
    ? asn1.create(U, T.UTCTIME, false, asn1.dateToUtcTime(whole))
    : asn1.create(U, T.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(whole));
}

/** A Name holding a single CN as UTF8String: the only form sros2 writes and DDS compares against. */
export function cnName(cn: string): Asn1 {
  return seq(set(seq(oid(OID.commonName), utf8(cn))));
}

export function algorithm(dotted: string, withNullParams = false): Asn1 {
  return withNullParams ? seq(oid(dotted), nul()) : seq(oid(dotted));
}

export const ECDSA_WITH_SHA256: Asn1 = algorithm(OID.ecdsaWithSha256);

export function extension(extnId: string, critical: boolean, value: Asn1 | Buffer): Asn1 {
  const der = Buffer.isBuffer(value) ? value : toDer(value);
  // DER forbids encoding the DEFAULT FALSE of `critical`.
  return critical ? seq(oid(extnId), bool(true), octets(der)) : seq(oid(extnId), octets(der));
}

/** Wraps tbs + signature into Certificate / CertificateList (same shape). */
export function signedEnvelope(tbs: Asn1, signatureAlgorithm: Asn1, signature: Buffer): Asn1 {
  return seq(tbs, signatureAlgorithm, bits(signature));
}

// ----- reading -------------------------------------------------------------------------------

export function children(node: Asn1 | undefined): Asn1[] {
  return node !== undefined && Array.isArray(node.value) ? node.value : [];
}

export function bytesOf(node: Asn1 | undefined): Buffer {
  if (node === undefined || typeof node.value !== 'string') throw new Error('expected a primitive ASN.1 value');
  return Buffer.from(node.value, 'latin1');
}

export function isUniversal(node: Asn1 | undefined, type: forge.asn1.Type): node is Asn1 {
  return node !== undefined && node.tagClass === U && node.type === type;
}

export function isContext(node: Asn1 | undefined, n: number): node is Asn1 {
  return node !== undefined && node.tagClass === CTX && node.type === (n as forge.asn1.Type);
}

export function oidOf(node: Asn1 | undefined): string | undefined {
  return isUniversal(node, T.OID) && typeof node.value === 'string' ? asn1.derToOid(node.value) : undefined;
}

export function stringOf(node: Asn1 | undefined): string | undefined {
  if (node === undefined || node.tagClass !== U || typeof node.value !== 'string') return undefined;
  switch (node.type) {
    case T.UTF8:
      return Buffer.from(node.value, 'latin1').toString('utf8');
    case T.BMPSTRING: // forge already decodes BMPString into a JS string
    case T.PRINTABLESTRING:
    case T.IA5STRING:
    case 20 as forge.asn1.Type: // TeletexString: read as Latin-1, as OpenSSL does
      return node.value;
    default:
      return undefined;
  }
}

// ----- PEM -----------------------------------------------------------------------------------

/** Base64 in 64-column lines, each ending in LF (PEM bodies, S/MIME signature parts). */
export function base64Lines(der: Buffer): string {
  const b64 = der.toString('base64');
  let out = '';
  for (let i = 0; i < b64.length; i += 64) out += b64.slice(i, i + 64) + '\n';
  return out;
}

export function toPem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${base64Lines(der)}-----END ${label}-----\n`;
}

/** The DER of the first PEM block with this label (Buffer's base64 decoder skips the line breaks). */
export function fromPem(pem: string, label: string, what: string): Buffer {
  const begin = `-----BEGIN ${label}-----`;
  const start = pem.indexOf(begin);
  const end = start < 0 ? -1 : pem.indexOf(`-----END ${label}-----`, start);
  if (start < 0 || end < 0) throw new PkiError(`${what} is not a PEM ${label.toLowerCase()}`);
  const body = pem.slice(start + begin.length, end);
  if (!/^[A-Za-z0-9+/=\s]*$/.test(body)) throw new PkiError(`${what} is not a valid PEM ${label.toLowerCase()}`);
  const der = Buffer.from(body, 'base64');
  if (der.length === 0) throw new PkiError(`${what} is empty`);
  return der;
}
