import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPair, inspectCertificate, issueCertificate, issueCrl, PkiError, readCrl } from '../server/pki/index.js';

const now = new Date();
const later = new Date(now.getTime() + 86400_000);
const makeCa = (cn: string) => {
  const k = generateKeyPair();
  return { certPem: issueCertificate({ subjectCN: cn, publicKeyPem: k.publicKeyPem, issuer: { keyPem: k.privateKeyPem }, notBefore: now, notAfter: later, profile: 'ca' }), keyPem: k.privateKeyPem };
};
const leaf = (ca: { certPem: string; keyPem: string }, cn: string) =>
  issueCertificate({ subjectCN: cn, publicKeyPem: generateKeyPair().publicKeyPem, issuer: ca, notBefore: now, notAfter: later, profile: 'enclave' });

test('readCrl returns the serials openssl sees, and refuses a CRL from another CA or tampered', () => {
  const ca = makeCa('sros2CA');
  const serials = [leaf(ca, '/a'), leaf(ca, '/b')].map((c) => inspectCertificate(c).serialHex);
  const crl = issueCrl({ issuer: ca, revoked: serials.map((s) => ({ serialHex: s, revokedAt: now })), thisUpdate: now, nextUpdate: later, crlNumber: 3 });
  const { revokedSerials } = readCrl(crl, ca.certPem);
  assert.deepEqual([...revokedSerials].sort(), [...serials].sort());
  const text = execFileSync('openssl', ['crl', '-noout', '-text'], { input: crl, encoding: 'utf8' });
  const opensslSerials = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.replace(/^(00)+/, ''));
  assert.deepEqual(opensslSerials.sort(), [...revokedSerials].sort());
  assert.throws(() => readCrl(crl, makeCa('sros2CA').certPem), (e: unknown) => e instanceof PkiError && /not signed by the identity CA/.test(e.message));
  const der = Buffer.from(crl.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 80]! ^= 0x01;
  const tampered = `-----BEGIN X509 CRL-----\n${der.toString('base64')}\n-----END X509 CRL-----\n`;
  assert.throws(() => readCrl(tampered, ca.certPem), PkiError);
  assert.throws(() => readCrl('not a crl', ca.certPem), PkiError);
  const empty = issueCrl({ issuer: ca, revoked: [], thisUpdate: now, nextUpdate: later, crlNumber: 1 });
  assert.equal(readCrl(empty, ca.certPem).revokedSerials.size, 0);
});
