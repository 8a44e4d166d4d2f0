import crypto from 'node:crypto';

export interface DeviceKey {
  privateKey: crypto.KeyObject;
  publicKeyPem: string;
  alg: 'ES256' | 'EdDSA';
}

export function deviceKey(type: 'p256' | 'ed25519' = 'p256'): DeviceKey {
  const { privateKey, publicKey } =
    type === 'p256' ? crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : crypto.generateKeyPairSync('ed25519');
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(), alg: type === 'p256' ? 'ES256' : 'EdDSA' };
}

/** A robot login assertion as the agent makes it; `claims` overrides any field (tests make bad ones). */
export function assertion(robot: string, key: DeviceKey, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): string {
  const iat = Math.floor(Date.now() / 1000);
  const h = Buffer.from(JSON.stringify({ alg: key.alg, typ: 'JWT', ...header })).toString('base64url');
  const p = Buffer.from(
    JSON.stringify({ sub: robot, aud: 'enclave-server', iat, exp: iat + 120, jti: crypto.randomBytes(16).toString('hex'), ...claims }),
  ).toString('base64url');
  const data = Buffer.from(`${h}.${p}`);
  const sig =
    key.alg === 'ES256'
      ? crypto.sign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
      : crypto.sign(null, data, key.privateKey);
  return `${h}.${p}.${sig.toString('base64url')}`;
}
