import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { masterKeyId, parseMasterKey, Sealer } from '../server/secrets/seal.js';

describe('encryption at rest', () => {
  const key = crypto.randomBytes(32);
  const sealer = new Sealer([key]);

  test('seals and opens; every seal uses a new nonce', () => {
    const a = sealer.seal('-----BEGIN PRIVATE KEY-----\nabc', 'ctx');
    const b = sealer.seal('-----BEGIN PRIVATE KEY-----\nabc', 'ctx');
    assert.notEqual(a, b);
    assert.doesNotMatch(a, /PRIVATE KEY/);
    assert.equal(sealer.openText(a, 'ctx'), '-----BEGIN PRIVATE KEY-----\nabc');
    assert.equal(a.split(':')[1], masterKeyId(key), 'the key id travels with the ciphertext');
  });

  test('a wrong key fails', () => {
    const other = new Sealer([crypto.randomBytes(32)]);
    assert.throws(() => other.open(sealer.seal('secret', 'ctx'), 'ctx'), /unknown master key/);
    // Same id forged onto a different key still fails authentication.
    const forged = sealer.seal('secret', 'ctx').split(':');
    forged[1] = masterKeyId(key);
    const otherKey = crypto.randomBytes(32);
    const imposter = new Sealer([otherKey]);
    const imposterSealed = imposter.seal('secret', 'ctx').split(':');
    imposterSealed[1] = masterKeyId(key);
    assert.throws(() => sealer.open(imposterSealed.join(':'), 'ctx'), /does not open/);
  });

  test('a wrong context or a flipped bit fails', () => {
    const s = sealer.seal('secret', 'keystore:a');
    assert.throws(() => sealer.open(s, 'keystore:b'), /does not open/);
    const parts = s.split(':');
    const body = Buffer.from(parts[3]!, 'base64url');
    body[0]! ^= 1;
    parts[3] = body.toString('base64url');
    assert.throws(() => sealer.open(parts.join(':'), 'keystore:a'), /does not open/);
  });

  test('a keyring opens secrets sealed under the previous master key (rotation)', () => {
    const next = crypto.randomBytes(32);
    const ring = new Sealer([next, key]);
    const old = sealer.seal('old secret', 'c');
    assert.equal(ring.openText(old, 'c'), 'old secret');
    assert.equal(ring.needsReseal(old), true);
    assert.equal(ring.needsReseal(ring.seal('new', 'c')), false);
  });

  test('master key files: raw, hex and base64 accepted; anything else refused', () => {
    assert.deepEqual(parseMasterKey(key), key);
    assert.deepEqual(parseMasterKey(Buffer.from(`${key.toString('hex')}\n`)), key);
    assert.deepEqual(parseMasterKey(Buffer.from(key.toString('base64'))), key);
    assert.throws(() => parseMasterKey(Buffer.from('too short')), /32 bytes/);
  });
});
