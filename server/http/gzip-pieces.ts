/**
 * A gzip answer (RFC 1952, one member; its deflate stream per RFC 1951) put together from pieces, some
 * compressed once and shared by every answer that carries them, the others stored as they are.
 *
 * Why not gzip each answer: a bundle is the same 17 KB for ten thousand robots bound alike, and compressing it
 * once per answer would cost more CPU than sending it uncompressed saves. Compressed once, each answer costs
 * a CRC over its bytes.
 *
 * Why some pieces are stored: compression over a secret and text someone else chose leaks the secret through
 * the compressed length (BREACH). A bundle carries private keys next to permissions whose topics a member
 * wrote, and a login's answer carries the robot's token. A secret is therefore stored, never compressed, and
 * every compressed run is compressed on its own (`deflateRun`): nothing compressed refers to a secret or across
 * one, so the answer's length does not depend on what a secret holds.
 */
import zlib from 'node:zlib';

/** Bytes of an answer in order; `deflated` gives them as deflate blocks made once (see `deflateRun`). */
export interface Piece {
  raw: Buffer;
  deflated?: () => Buffer;
}

/** ID1 ID2, deflate, no flags, no mtime, no extra flags, OS unknown. */
const HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff]);
/** An empty stored block with BFINAL set: the stream ends here. */
const FINAL = Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]);
const MAX_STORED = 0xffff;

/**
 * `raw` as deflate blocks compressed on their own (no reference before their start), ending on a full flush:
 * byte-aligned and not final, so any other blocks may follow. Meant to be made once and kept.
 */
export function deflateRun(raw: Buffer): Buffer {
  return zlib.deflateRawSync(raw, { finishFlush: zlib.constants.Z_FULL_FLUSH });
}

/** `raw` as stored deflate blocks (not final): their length depends on `raw`'s length only. */
export function storedRun(raw: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < raw.length; at += MAX_STORED) {
    const chunk = raw.subarray(at, Math.min(raw.length, at + MAX_STORED));
    const head = Buffer.alloc(5);
    head.writeUInt16LE(chunk.length, 1);
    head.writeUInt16LE(~chunk.length & 0xffff, 3);
    out.push(head, chunk);
  }
  return out;
}

/**
 * `raw` as deflate blocks with the byte ranges in `secrets` (sorted, apart) stored and every run between
 * them compressed on its own.
 */
export function deflateAround(raw: Buffer, secrets: readonly (readonly [number, number])[]): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (const [start, end] of secrets) {
    if (start > at) out.push(deflateRun(raw.subarray(at, start)));
    out.push(...storedRun(raw.subarray(start, end)));
    at = end;
  }
  if (at < raw.length) out.push(deflateRun(raw.subarray(at)));
  return Buffer.concat(out);
}

/** The gzip member of the pieces' bytes, in order, as buffers to write one after another. */
export function gzipMember(pieces: readonly Piece[]): Buffer[] {
  const out: Buffer[] = [HEADER];
  let crc = 0;
  let size = 0;
  for (const p of pieces) {
    if (p.raw.length === 0) continue;
    crc = zlib.crc32(p.raw, crc);
    size += p.raw.length;
    if (p.deflated) out.push(p.deflated());
    else out.push(...storedRun(p.raw));
  }
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  // ISIZE is the length modulo 2^32 (RFC 1952).
  trailer.writeUInt32LE(size >>> 0, 4);
  out.push(FINAL, trailer);
  return out;
}
