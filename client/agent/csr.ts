/**
 * PKCS#10 certificate signing requests for per-robot enclave identities (RFC 2986), built on the robot.
 *
 * The key is a P-256 key made with Node's crypto; the request is signed with it (ECDSA-SHA256, DER
 * signature), which is the proof of possession the server checks. Only the DER layout is written here: the
 * signature, key generation and SPKI encoding all come from Node's crypto. The server ignores the subject and
 * puts the enclave's own subject (`CN=<enclave path>`) in the certificate; the request carries it anyway, so
 * an operator reading it with `openssl req -text` sees which enclave it is for.
 */
import { createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';

/** DER length octets (definite form). */
function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), derLength(content.length), content]);
}

const sequence = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const utf8String = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const bitString = (bytes: Buffer): Buffer => tlv(0x03, Buffer.concat([Buffer.from([0]), bytes]));

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

const OID_COMMON_NAME = '2.5.4.3';
const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';

/** A fresh P-256 key pair for one enclave identity. */
export function newIdentityKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' });
}

/**
 * A PEM PKCS#10 request for `privateKey` with subject `CN=<commonName>`, self-signed with ECDSA-SHA256.
 * Attributes are empty (`[0]` with no content), as `openssl req` writes them without extensions.
 */
export function buildCsr(privateKey: KeyObject, commonName: string): string {
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error('a CSR key must be an EC P-256 key');
  }
  if (privateKey.type !== 'private') throw new Error('a CSR is signed with the private key');
  const spki = spkiDer(privateKey);
  const subject = sequence(set(sequence(oid(OID_COMMON_NAME), utf8String(commonName))));
  const info = sequence(tlv(0x02, Buffer.from([0])), subject, spki, tlv(0xa0, Buffer.alloc(0)));
  const signature = sign('sha256', info, { key: privateKey, dsaEncoding: 'der' });
  const der = sequence(info, sequence(oid(OID_ECDSA_WITH_SHA256)), bitString(signature));
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}-----END CERTIFICATE REQUEST-----\n`;
}

/** The SPKI (DER) of a key (private or public), to compare a certificate's public key with the agent's key. */
export function spkiDer(key: KeyObject): Buffer {
  return (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' });
}
