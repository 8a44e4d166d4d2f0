import crypto, { type KeyObject } from 'node:crypto';
import { PkiError } from './errors.js';
import { fromPem, toPem } from './der.js';

/** A PEM string, or a KeyObject already parsed by the caller (saves a costly PEM decode in hot loops). */
export type PrivateKeyInput = string | KeyObject;
export type PublicKeyInput = string | KeyObject;

export interface KeyPair {
  /** Unencrypted PKCS#8 PEM (label "PRIVATE KEY"), byte-identical to what OpenSSL/sros2 write. */
  privateKeyPem: string;
  /** SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`. */
  publicKeyPem: string;
}

// Fixed DER framing of a P-256 key: SPKI = prefix || 04 X Y; PKCS#8 = prefix || d || middle || 04 X Y
// (ECPrivateKey v1 with the public key in [1], no [0] parameters: OpenSSL 3's output). The tests
// compare these byte for byte with OpenSSL's own re-serialisation. Filling the frame costs a few µs
// where OpenSSL 3's encoder framework takes ~80 µs (PKCS#8) and ~150 µs (SPKI) per key.
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
const P256_PKCS8_PREFIX = Buffer.from('308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420', 'hex');
const P256_PKCS8_MIDDLE = Buffer.from('a144034200', 'hex');
const P256_SPKI_LENGTH = P256_SPKI_PREFIX.length + 65;

function jwkCoordinate(value: string | undefined): Buffer {
  const bytes = Buffer.from(value ?? '', 'base64url');
  if (bytes.length !== 32) throw new PkiError('unexpected P-256 key encoding');
  return bytes;
}

function pointFromJwk(jwk: crypto.JsonWebKey): Buffer {
  return Buffer.concat([Buffer.of(4), jwkCoordinate(jwk.x), jwkCoordinate(jwk.y)]);
}

/** 04 || X || Y of an EC P-256 key, or undefined for any other key type or curve. */
function p256Point(key: KeyObject): Buffer | undefined {
  if (key.asymmetricKeyType !== 'ec') return undefined;
  let jwk: crypto.JsonWebKey;
  try {
    jwk = key.export({ format: 'jwk' });
  } catch {
    return undefined; // a curve JWK has no name for
  }
  return jwk.crv === 'P-256' ? pointFromJwk(jwk) : undefined;
}

// Public keys this process generated recently: known to be valid P-256 points, so issuing their
// certificate can skip re-validating them (the usual generate-then-issue sequence).
const OWN_KEYS_SIZE = 1024;
const ownPublicKeys = new Set<string>();
const ownKeyRing: string[] = [];
let ownKeyNext = 0;

/**
 * EC P-256 (prime256v1), the DDS-Security and sros2 default. Generated through OpenSSL's ECDH
 * interface, which hands out the scalar and the point directly: half the cost of
 * generateKeyPairSync plus a JWK export, and the same OpenSSL EC key generation underneath.
 */
export function generateKeyPair(): KeyPair {
  const ecdh = crypto.createECDH('prime256v1');
  const point = ecdh.generateKeys();
  const scalar = ecdh.getPrivateKey();
  // The scalar comes without leading zero bytes (1 key in 256); ECPrivateKey wants exactly 32.
  const d = scalar.length === 32 ? scalar : Buffer.concat([Buffer.alloc(32 - scalar.length), scalar]);
  const publicKeyPem = toPem('PUBLIC KEY', Buffer.concat([P256_SPKI_PREFIX, point]));
  // A ring rather than Set-iteration eviction: iterating a Set past deleted entries is not O(1).
  const evicted = ownKeyRing[ownKeyNext];
  if (evicted !== undefined) ownPublicKeys.delete(evicted);
  ownKeyRing[ownKeyNext] = publicKeyPem;
  ownKeyNext = (ownKeyNext + 1) % OWN_KEYS_SIZE;
  ownPublicKeys.add(publicKeyPem);
  return {
    privateKeyPem: toPem('PRIVATE KEY', Buffer.concat([P256_PKCS8_PREFIX, d, P256_PKCS8_MIDDLE, point])),
    publicKeyPem,
  };
}

// Decoding a PEM private key costs ~500 µs in OpenSSL 3, far more than signing with it, and the same
// few CA keys sign everything: keep the parsed KeyObjects. Bounded, oldest entry evicted first.
const PRIVATE_KEY_CACHE_SIZE = 64;
const privateKeyCache = new Map<string, KeyObject>();

export function privateKeyObject(input: PrivateKeyInput, what = 'private key'): KeyObject {
  if (typeof input !== 'string') {
    if (input.type !== 'private') throw new PkiError(`${what} is not a private key`);
    return input;
  }
  const cached = privateKeyCache.get(input);
  if (cached !== undefined) return cached;
  if (input.includes('ENCRYPTED')) throw new PkiError(`${what} is encrypted; an unencrypted PKCS#8 or SEC1 PEM key is needed`);
  let key: KeyObject;
  try {
    key = crypto.createPrivateKey({ key: input, format: 'pem' });
  } catch (cause) {
    throw new PkiError(`${what} is not a valid PEM private key`, { cause });
  }
  if (privateKeyCache.size >= PRIVATE_KEY_CACHE_SIZE) {
    const oldest = privateKeyCache.keys().next().value;
    if (oldest !== undefined) privateKeyCache.delete(oldest);
  }
  privateKeyCache.set(input, key);
  return key;
}

/** Throws unless the key can make the ecdsa-with-SHA256 signatures this module writes. */
export function requireEcSigningKey(key: KeyObject, what: string): void {
  if (key.asymmetricKeyType !== 'ec') {
    throw new PkiError(`${what} must be an EC key (ecdsa-with-SHA256); got ${key.asymmetricKeyType ?? 'an unknown key type'}`);
  }
}

/** DER SubjectPublicKeyInfo of a PEM public key or of a (public or private) KeyObject, validated. */
export function spkiDer(input: PublicKeyInput, what = 'public key'): Buffer {
  if (typeof input !== 'string') {
    const publicKey = input.type === 'private' ? crypto.createPublicKey(input) : input;
    const point = p256Point(publicKey);
    return point !== undefined
      ? Buffer.concat([P256_SPKI_PREFIX, point])
      : (publicKey.export({ type: 'spki', format: 'der' }) as Buffer);
  }
  const der = fromPem(input, 'PUBLIC KEY', what);
  if (der.length === P256_SPKI_LENGTH && der.subarray(0, P256_SPKI_PREFIX.length).equals(P256_SPKI_PREFIX)) {
    if (ownPublicKeys.has(input)) return der;
    // convertKey rejects points that are not on the curve, for a fraction of createPublicKey's cost.
    try {
      crypto.ECDH.convertKey(der.subarray(P256_SPKI_PREFIX.length), 'prime256v1');
    } catch (cause) {
      throw new PkiError(`${what} is not a valid EC P-256 public key`, { cause });
    }
    return der;
  }
  try {
    return crypto.createPublicKey({ key: der, format: 'der', type: 'spki' }).export({ type: 'spki', format: 'der' });
  } catch (cause) {
    throw new PkiError(`${what} is not a valid public key`, { cause });
  }
}

export function publicKeyFromPrivate(keyPem: PrivateKeyInput): string {
  return toPem('PUBLIC KEY', spkiDer(privateKeyObject(keyPem)));
}
