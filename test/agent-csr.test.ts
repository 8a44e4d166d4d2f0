/**
 * The agent's PKCS#10 builder, refereed by openssl: the request verifies, names the subject and carries an EC
 * P-256 key equal to the agent's; a request with one byte changed in the signed part fails openssl's check.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildCsr, newIdentityKey, spkiDer } from '../client/agent/csr.js';
import { openssl, opensslOk } from './helpers/openssl.js';

const dir = fs.mkdtempSync(join(tmpdir(), 'agent-csr-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
}

test('openssl verifies the request and sees the subject and the P-256 key', () => {
  const { privateKey, publicKey } = newIdentityKey();
  const csr = buildCsr(privateKey, '/fleet/amr/driver');
  const file = join(dir, 'x.csr');
  fs.writeFileSync(file, csr);
  const verify = openssl(['req', '-in', file, '-verify', '-noout']);
  assert.equal(verify.status, 0, verify.out);
  assert.match(verify.out, /self-signature verify OK/i);
  const text = opensslOk(['req', '-in', file, '-noout', '-text']);
  assert.match(text, /Subject: CN\s?=\s?\/fleet\/amr\/driver\n/);
  assert.match(text, /Public Key Algorithm: id-ecPublicKey/);
  assert.match(text, /ASN1 OID: prime256v1/);
  assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
  // The key in the request is the agent's key: openssl's own export of it equals Node's SPKI.
  const pub = opensslOk(['req', '-in', file, '-noout', '-pubkey']);
  assert.deepEqual(createPublicKey(pub).export({ type: 'spki', format: 'der' }), publicKey.export({ type: 'spki', format: 'der' }));
  assert.deepEqual(spkiDer(privateKey), spkiDer(publicKey));
});

test('long subjects use long-form DER lengths and still verify', () => {
  const { privateKey } = newIdentityKey();
  const path = `/${'a'.repeat(120)}/${'b'.repeat(120)}`;
  const file = join(dir, 'long.csr');
  fs.writeFileSync(file, buildCsr(privateKey, path));
  const verify = openssl(['req', '-in', file, '-verify', '-noout']);
  assert.equal(verify.status, 0, verify.out);
  assert.match(verify.out, /self-signature verify OK/i);
  assert.ok(opensslOk(['req', '-in', file, '-noout', '-subject']).includes(path));
});

test('a tampered request fails openssl verification; a new key makes a different request', () => {
  const { privateKey } = newIdentityKey();
  const csr = buildCsr(privateKey, '/fleet/amr/driver');
  const der = pemToDer(csr);
  // Change one letter of the subject (inside the signed CertificationRequestInfo).
  const at = der.indexOf(Buffer.from('/fleet/amr/driver'));
  assert.ok(at > 0);
  const bad = Buffer.from(der);
  bad[at + 1] = 'F'.charCodeAt(0);
  const file = join(dir, 'bad.csr');
  fs.writeFileSync(file, bad);
  const verify = openssl(['req', '-inform', 'DER', '-in', file, '-verify', '-noout']);
  // OpenSSL 3.0 (Debian 12) prints the failure but still exits 0, so the verdict is read from its words.
  assert.match(verify.out, /self-signature verify failure/i);
  assert.doesNotMatch(verify.out, /verify OK/i);
  // The untouched DER verifies in the same form, so the failure is the tampering.
  fs.writeFileSync(file, der);
  const good = openssl(['req', '-inform', 'DER', '-in', file, '-verify', '-noout']);
  assert.equal(good.status, 0, good.out);
  assert.match(good.out, /self-signature verify OK/i);
  assert.notEqual(buildCsr(newIdentityKey().privateKey, '/fleet/amr/driver'), csr);
});

test('only EC P-256 private keys are accepted', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  assert.throws(() => buildCsr(rsa.privateKey, '/a'), /P-256/);
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  assert.throws(() => buildCsr(p384.privateKey, '/a'), /P-256/);
  assert.throws(() => buildCsr(newIdentityKey().publicKey, '/a'), /private key/);
});

