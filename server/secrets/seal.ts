import crypto from 'node:crypto';

/**
 * Encryption at rest for every private key the server stores.
 *
 * Sealed format (text, so it fits a TEXT column): `v1:<keyId>:<nonce b64url>:<ciphertext+tag b64url>`.
 * AES-256-GCM with a random 96-bit nonce per seal. The key id (first 8 bytes of SHA-256 of the master key)
 * travels with the ciphertext so a keyring holding the old and the new master key can open everything
 * during a rotation. `context` is bound as additional authenticated data: a ciphertext copied into another
 * row (say, keystore A's CA key pasted into keystore B) fails to open.
 */
export class SealError extends Error {}

const VERSION = 'v1';

export function masterKeyId(key: Buffer): string {
  return crypto.createHash('sha256').update(key).digest('hex').slice(0, 16);
}

export class Sealer {
  private readonly keys = new Map<string, Buffer>();
  private readonly currentId: string;

  /** `keys[0]` seals; all of them open. */
  constructor(keys: Buffer[]) {
    if (keys.length === 0) throw new SealError('no master key');
    for (const key of keys) {
      if (key.length !== 32) throw new SealError('a master key must be 32 bytes');
      this.keys.set(masterKeyId(key), key);
    }
    this.currentId = masterKeyId(keys[0]!);
  }

  get keyId(): string {
    return this.currentId;
  }

  seal(plaintext: string | Buffer, context: string): string {
    const nonce = crypto.randomBytes(12);
    const cipher = crypto.createCipheriv('aes-256-gcm', this.keys.get(this.currentId)!, nonce);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
    return [VERSION, this.currentId, nonce.toString('base64url'), body.toString('base64url')].join(':');
  }

  open(sealed: string, context: string): Buffer {
    const parts = sealed.split(':');
    if (parts.length !== 4 || parts[0] !== VERSION) throw new SealError('not a sealed secret');
    const key = this.keys.get(parts[1]!);
    if (!key) throw new SealError('sealed with an unknown master key');
    const nonce = Buffer.from(parts[2]!, 'base64url');
    const body = Buffer.from(parts[3]!, 'base64url');
    if (nonce.length !== 12 || body.length < 16) throw new SealError('not a sealed secret');
    const decipher = crypto.createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAAD(Buffer.from(context, 'utf8'));
    decipher.setAuthTag(body.subarray(body.length - 16));
    try {
      return Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()]);
    } catch {
      throw new SealError('sealed secret does not open with this key (wrong key, context or tampered)');
    }
  }

  openText(sealed: string, context: string): string {
    return this.open(sealed, context).toString('utf8');
  }

  /** True when the secret was sealed under an older key and should be re-sealed. */
  needsReseal(sealed: string): boolean {
    return sealed.split(':')[1] !== this.currentId;
  }
}

/**
 * Reads a master key file: 32 raw bytes, or 64 hex characters / base64 of 32 bytes (what an operator can
 * paste into a Docker secret), surrounding whitespace ignored.
 */
export function parseMasterKey(content: Buffer): Buffer {
  if (content.length === 32) return content;
  const text = content.toString('utf8').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const decoded = Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
    if (decoded.length === 32) return decoded;
  }
  throw new SealError('master key file must hold 32 bytes (raw, 64 hex characters or base64)');
}
