import crypto from 'node:crypto';
import { InvalidInput, Unauthorized } from '../errors.js';

/** Device keys robots enroll with: P-256 (ES256) or Ed25519 (EdDSA), as SPKI PEM. */
export interface DeviceKey {
  publicKeyPem: string;
  keyId: string;
  alg: 'ES256' | 'EdDSA';
  /** Parsed once: turning the PEM into a key object cost more than the signature check itself. */
  key: crypto.KeyObject;
}

export function parseDeviceKey(pem: string): DeviceKey {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw new InvalidInput('publicKey: not an SPKI PEM public key', undefined, 'invalid-public-key');
  }
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const alg = type === 'ec' && curve === 'prime256v1' ? 'ES256' : type === 'ed25519' ? 'EdDSA' : null;
  if (!alg) throw new InvalidInput('publicKey: must be EC P-256 or Ed25519', undefined, 'invalid-public-key');
  const der = key.export({ type: 'spki', format: 'der' });
  return {
    publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: crypto.createHash('sha256').update(der).digest('hex'),
    alg,
    key,
  };
}

/**
 * A device key as stored at enrollment (already checked and normalised by `parseDeviceKey`), made ready to
 * verify: one parse, no re-export (each export cost as much as the parse, and a boot storm is all first logins).
 */
export function storedDeviceKey(pem: string, keyId: string): DeviceKey {
  const key = crypto.createPublicKey(pem);
  return { publicKeyPem: pem, keyId, alg: key.asymmetricKeyType === 'ed25519' ? 'EdDSA' : 'ES256', key };
}

export const ASSERTION_AUDIENCE = 'enclave-server';
export const MAX_ASSERTION_LIFETIME_S = 300;
const CLOCK_TOLERANCE_S = 60;

export interface AssertionClaims {
  sub: string;
  jti: string;
  iat: number;
  exp: number;
}

/** Reads the claims without trusting them: only to find which robot's key to verify with. */
export function unverifiedSubject(assertion: string): string {
  const parts = assertion.split('.');
  if (parts.length !== 3) throw new Unauthorized('malformed assertion', 'invalid-assertion');
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { sub?: unknown };
    if (typeof claims.sub === 'string') return claims.sub;
  } catch {
    /* falls through */
  }
  throw new Unauthorized('malformed assertion', 'invalid-assertion');
}

/**
 * Verifies a robot's login assertion (a compact JWS) against its enrolled device key: the algorithm must
 * be the key's own (no `none`, no confusion with our HMAC tokens), then `aud`, `sub`, a short lifetime
 * (`exp` - `iat` ≤ 5 min) and a `jti` the caller checks for replay. Signature checking is Node's crypto.
 */
export function verifyAssertion(assertion: string, key: DeviceKey, robot: string, nowMs: number): AssertionClaims {
  const fail = (why: string): never => {
    throw new Unauthorized(`assertion refused: ${why}`, 'invalid-assertion');
  };
  const [h, p, s] = assertion.split('.');
  if (!h || !p || s === undefined) fail('malformed');
  let header: { alg?: unknown };
  let claims: { sub?: unknown; aud?: unknown; iat?: unknown; exp?: unknown; jti?: unknown };
  try {
    header = JSON.parse(Buffer.from(h!, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(p!, 'base64url').toString('utf8'));
  } catch {
    return fail('malformed');
  }
  if (header.alg !== key.alg) fail(`algorithm must be ${key.alg}`);
  const signature = Buffer.from(s!, 'base64url');
  const data = Buffer.from(`${h}.${p}`);
  const ok =
    key.alg === 'ES256'
      ? crypto.verify('sha256', data, { key: key.key, dsaEncoding: 'ieee-p1363' }, signature)
      : crypto.verify(null, data, key.key, signature);
  if (!ok) fail('bad signature');
  const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!aud.includes(ASSERTION_AUDIENCE)) fail(`aud must be "${ASSERTION_AUDIENCE}"`);
  if (claims.sub !== robot) fail('sub does not name the robot');
  if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number') fail('iat and exp are required');
  if (typeof claims.jti !== 'string' || claims.jti.length < 16 || claims.jti.length > 128) fail('jti must be 16-128 characters');
  const iat = claims.iat as number;
  const exp = claims.exp as number;
  const now = nowMs / 1000;
  if (exp - iat > MAX_ASSERTION_LIFETIME_S || exp <= iat) fail(`lifetime must be at most ${MAX_ASSERTION_LIFETIME_S} s`);
  if (exp < now - CLOCK_TOLERANCE_S) fail('expired');
  if (iat > now + CLOCK_TOLERANCE_S) fail('issued in the future (check the robot clock)');
  return { sub: robot, jti: claims.jti as string, iat, exp };
}
