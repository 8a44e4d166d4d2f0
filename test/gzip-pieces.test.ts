import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import zlib from 'node:zlib';
import { deflateAround, deflateRun, gzipMember, storedRun, type Piece } from '../server/http/gzip-pieces.js';

const text = (n: number, seed: string) => {
  let out = '';
  for (let i = 0; out.length < n; i++) out += `{"path":"/fleet/${seed}/${i}","files":{"cert.pem":"-----BEGIN CERTIFICATE-----\\n${crypto.createHash('sha256').update(`${seed}${i % 7}`).digest('base64')}"}},`;
  return Buffer.from(out.slice(0, n));
};

/** What gzip(1) makes of it: an implementation other than Node's zlib bindings. */
function gunzipWithGzip(gz: Buffer): Buffer {
  const out = spawnSync('gzip', ['-dc'], { input: gz, maxBuffer: 16 * 1024 * 1024 });
  assert.equal(out.status, 0, out.stderr?.toString());
  return out.stdout;
}

describe('gzip answers from shared and stored pieces', () => {
  test('compressed, stored, empty and over-64-KiB pieces decode to their bytes in order, by zlib and by gzip(1)', () => {
    const shared = text(20_000, 'a');
    const big = crypto.randomBytes(150_000);
    const pieces: Piece[] = [
      { raw: Buffer.from('{"revision":"r1","keystores":') },
      { raw: shared, deflated: () => deflateRun(shared) },
      { raw: Buffer.alloc(0) },
      { raw: big },
      { raw: shared, deflated: () => deflateAround(shared, [[100, 400], [5_000, 5_001]]) },
      { raw: Buffer.from('}') },
    ];
    const gz = Buffer.concat(gzipMember(pieces));
    const expected = Buffer.concat(pieces.map((p) => p.raw));
    assert.deepEqual(zlib.gunzipSync(gz), expected);
    assert.deepEqual(gunzipWithGzip(gz), expected);
    assert.equal(spawnSync('gzip', ['-t'], { input: gz }).status, 0, 'gzip -t: CRC and length check out');
    // Stored blocks cost 5 bytes per 64 KiB; the compressed text a fraction of its size.
    assert.ok(gz.length < expected.length - shared.length, `${gz.length} of ${expected.length}`);
    assert.equal(Buffer.concat(storedRun(big)).length, big.length + 5 * Math.ceil(big.length / 0xffff));
  });

  test('nothing but stored pieces, and no pieces at all, are valid gzip too', () => {
    for (const pieces of [[{ raw: Buffer.from('{"token":"t"}') }], []]) {
      const gz = Buffer.concat(gzipMember(pieces));
      assert.deepEqual(zlib.gunzipSync(gz), Buffer.concat(pieces.map((p) => p.raw)));
      assert.deepEqual(gunzipWithGzip(gz), Buffer.concat(pieces.map((p) => p.raw)));
    }
  });

  // BREACH: when a secret is compressed together with text an attacker chose, a guess that matches the secret
  // compresses better, and the answer's length tells.
  test("a secret's content does not change the answer's length, whatever the text around it", () => {
    const around = text(4_000, 'policy');
    const secretLike = around.subarray(1_000, 1_400);
    const unlike = crypto.randomBytes(400);
    const framed = (secret: Buffer) => Buffer.concat([around, secret, around]);
    const spans: [number, number][] = [[around.length, around.length + 400]];
    const sizeOf = (secret: Buffer) => Buffer.concat(gzipMember([{ raw: framed(secret), deflated: () => deflateAround(framed(secret), spans) }])).length;
    assert.equal(sizeOf(secretLike), sizeOf(unlike));
    // Compressed whole, the same two differ: the test can tell a leak.
    assert.ok(zlib.gzipSync(framed(secretLike)).length < zlib.gzipSync(framed(unlike)).length);
    // And the secret is in the answer as it is, not folded into compressed text.
    const gz = Buffer.concat(gzipMember([{ raw: framed(unlike), deflated: () => deflateAround(framed(unlike), spans) }]));
    assert.ok(gz.includes(unlike));
  });
});
