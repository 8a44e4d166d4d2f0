import crypto from 'node:crypto';

// Each randomBytes call costs ~6 µs of fixed overhead and every issuance needs a couple of small
// values (serial, MIME boundary): draw them from a CSPRNG pool instead, as Node's randomUUID does.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/** n fresh CSPRNG bytes (n ≤ 4096), in a Buffer the caller owns. */
export function randomBytes(n: number): Buffer {
  if (offset + n > pool.length) {
    pool = crypto.randomBytes(POOL_SIZE);
    offset = 0;
  }
  const out = Buffer.from(pool.subarray(offset, offset + n));
  // Wipe what was handed out so no other caller can ever see the same bytes.
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}
