import crypto from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(crypto.scrypt) as (
  password: crypto.BinaryLike,
  salt: crypto.BinaryLike,
  keylen: number,
  options: crypto.ScryptOptions,
) => Promise<Buffer>;

// scrypt N=2^15, r=8, p=1: 32 MiB and ~0.1 s per hash on a small server core (OWASP's floor is N=2^17
// with r=8,p=1 for interactive logins; raise COST when the hardware allows, old hashes keep working).
const COST = { N: 1 << 15, r: 8, p: 1 };
const KEYLEN = 32;
const MAXMEM = 128 * 1024 * 1024;

export const MIN_PASSWORD_LENGTH = 12;

/** `scrypt$N$r$p$salt$hash` (base64url), so the cost can change without breaking stored hashes. */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(password.normalize('NFKC'), salt, KEYLEN, { ...COST, maxmem: MAXMEM });
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64url');
  const expected = Buffer.from(parts[5]!, 'base64url');
  const actual = await scrypt(password.normalize('NFKC'), salt, expected.length, { N, r, p, maxmem: MAXMEM });
  return crypto.timingSafeEqual(actual, expected);
}

/** Verifying against this when the user does not exist keeps "no such user" as slow as "wrong password". */
let decoy: Promise<string> | undefined;
export function decoyHash(): Promise<string> {
  decoy ??= hashPassword(crypto.randomBytes(16).toString('hex'));
  return decoy;
}

export function randomPassword(): string {
  return crypto.randomBytes(18).toString('base64url');
}
