import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto, { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import {
  PkiError,
  generateKeyPair,
  inspectCertificate,
  isSignedBy,
  issueCertificate,
  issueCrl,
  keyMatchesCertificate,
  publicKeyFromPrivate,
  signSmime,
  verifySmime,
  type KeyPair,
} from '../server/pki/index.js';
import {
  SROS2_FIXTURES,
  asn1parse,
  extractSros2Keystore,
  makeTempDir,
  openssl,
  opensslOk,
  slice,
  tbsFields,
} from './helpers/openssl.js';

const DAY = 86_400_000;
const NOW = new Date();
const NOT_BEFORE = new Date(Math.floor((NOW.getTime() - DAY) / 1000) * 1000);
const NOT_AFTER = new Date(NOT_BEFORE.getTime() + 3650 * DAY);
const GOVERNANCE_XML = fs.readFileSync(path.join(SROS2_FIXTURES, 'governance.default.xml'), 'utf8');

let dir: string;
let keystore: string; // the extracted sros2 fixture keystore
const file = (name: string, content?: string | Buffer): string => {
  const p = path.join(dir, name);
  if (content !== undefined) fs.writeFileSync(p, content);
  return p;
};

interface Ca {
  keys: KeyPair;
  certPem: string;
  certFile: string;
}
function makeCa(name: string, cn = 'sros2CA'): Ca {
  const keys = generateKeyPair();
  const certPem = issueCertificate({
    subjectCN: cn,
    publicKeyPem: keys.publicKeyPem,
    issuer: { keyPem: keys.privateKeyPem },
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    profile: 'ca',
  });
  return { keys, certPem, certFile: file(`${name}.cert.pem`, certPem) };
}
function makeEnclave(ca: Ca, name: string, cn: string): { keys: KeyPair; certPem: string; certFile: string } {
  const keys = generateKeyPair();
  const certPem = issueCertificate({
    subjectCN: cn,
    publicKeyPem: keys.publicKeyPem,
    issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem },
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    profile: 'enclave',
  });
  return { keys, certPem, certFile: file(`${name}.cert.pem`, certPem) };
}
const signer = (ca: Ca) => ({ certPem: ca.certPem, keyPem: ca.keys.privateKeyPem });
const ders = (pem: string) => new X509Certificate(pem).raw;
/** Text of the x509v3 extensions section of `openssl x509 -text`. */
const extensionsText = (certFile: string) => {
  const text = opensslOk(['x509', '-in', certFile, '-noout', '-text']);
  return text.slice(text.indexOf('X509v3 extensions:'), text.lastIndexOf('Signature Algorithm:'));
};

let ca: Ca;
let otherCa: Ca;

before(() => {
  dir = makeTempDir('pki-test-');
  keystore = extractSros2Keystore(dir);
  ca = makeCa('ca');
  otherCa = makeCa('other-ca');
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('keys', () => {
  test('generateKeyPair makes P-256 PKCS#8 / SPKI PEM byte-identical to what OpenSSL writes', () => {
    const kp = generateKeyPair();
    assert.match(kp.privateKeyPem, /^-----BEGIN PRIVATE KEY-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END PRIVATE KEY-----\n$/);
    assert.match(kp.publicKeyPem, /^-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END PUBLIC KEY-----\n$/);
    const keyFile = file('gen.key.pem', kp.privateKeyPem);
    // openssl re-serialises the key it reads: same bytes means the layout is canonical.
    assert.equal(opensslOk(['pkey', '-in', keyFile]), kp.privateKeyPem);
    assert.equal(opensslOk(['pkey', '-in', keyFile, '-pubout']), kp.publicKeyPem);
    assert.match(opensslOk(['pkey', '-in', keyFile, '-noout', '-text']), /ASN1 OID: prime256v1/);
    const key = crypto.createPrivateKey(kp.privateKeyPem);
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(key.export({ type: 'pkcs8', format: 'pem' }), kp.privateKeyPem);
    assert.equal(crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' }), kp.publicKeyPem);
    // a signature with the private key verifies with the public one
    const sig = crypto.sign('sha256', Buffer.from('x'), kp.privateKeyPem);
    assert.ok(crypto.verify('sha256', Buffer.from('x'), kp.publicKeyPem, sig));
  });

  test('a scalar with a leading zero byte is padded to 32 bytes (1 key in 256)', () => {
    let kp: KeyPair | undefined;
    for (let i = 0; i < 20_000 && kp === undefined; i++) {
      const candidate = generateKeyPair();
      const der = Buffer.from(candidate.privateKeyPem.split('\n').slice(1, -2).join(''), 'base64');
      if (der[36] === 0) kp = candidate; // d starts after the 36-byte PKCS#8/ECPrivateKey header
    }
    assert.ok(kp, 'no key with a leading zero byte found');
    const keyFile = file('short.key.pem', kp.privateKeyPem);
    assert.equal(opensslOk(['pkey', '-in', keyFile]), kp.privateKeyPem);
    assert.equal(opensslOk(['pkey', '-in', keyFile, '-pubout']), kp.publicKeyPem);
    const sig = crypto.sign('sha256', Buffer.from('x'), kp.privateKeyPem);
    assert.ok(crypto.verify('sha256', Buffer.from('x'), kp.publicKeyPem, sig));
  });

  test('the private key format matches the sros2 fixture key', () => {
    const fixtureKey = path.join(keystore, 'enclaves/talker_listener/talker/key.pem');
    const shape = (f: string) => asn1parse(f).map((e) => `${e.depth}:${e.type}:${e.length}`);
    assert.deepEqual(shape(file('shape.key.pem', generateKeyPair().privateKeyPem)), shape(fixtureKey));
  });

  test('publicKeyFromPrivate agrees with openssl pkey -pubout, also for the sros2 fixture key', () => {
    const fixtureKey = path.join(keystore, 'enclaves/talker_listener/talker/key.pem');
    assert.equal(publicKeyFromPrivate(fs.readFileSync(fixtureKey, 'utf8')), opensslOk(['pkey', '-in', fixtureKey, '-pubout']));
    const kp = generateKeyPair();
    assert.equal(publicKeyFromPrivate(kp.privateKeyPem), kp.publicKeyPem);
    assert.equal(publicKeyFromPrivate(crypto.createPrivateKey(kp.privateKeyPem)), kp.publicKeyPem);
    assert.throws(() => publicKeyFromPrivate('not a key'), PkiError);
  });
});

describe('CA certificate', () => {
  test('is a self-signed sros2 CA: v3, UTF8String CN=sros2CA, one critical basicConstraints CA:TRUE pathlen:1', () => {
    assert.match(opensslOk(['verify', '-CAfile', ca.certFile, ca.certFile]), /: OK/);
    const text = opensslOk(['x509', '-in', ca.certFile, '-noout', '-text']);
    assert.match(text, /Version: 3 \(0x2\)/);
    assert.match(text, /Issuer: CN = sros2CA/);
    assert.match(text, /Subject: CN = sros2CA/);
    assert.match(text, /Public Key Algorithm: id-ecPublicKey[\s\S]*ASN1 OID: prime256v1/);
    assert.equal(text.match(/Signature Algorithm: ecdsa-with-SHA256/g)?.length, 2);
    const ext = extensionsText(ca.certFile);
    assert.equal(ext.match(/X509v3 /g)?.length, 2, ext); // the section title + one extension
    assert.match(ext, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:1/);

    const fields = tbsFields(ca.certFile);
    assert.equal(fields.length, 8);
    const all = asn1parse(ca.certFile);
    const strings = all.filter((e) => e.type === 'UTF8STRING').map((e) => e.value);
    assert.deepEqual(strings, ['sros2CA', 'sros2CA']);
    assert.equal(all.filter((e) => e.type === 'PRINTABLESTRING').length, 0);
    const der = ders(ca.certPem);
    assert.ok(slice(der, fields[3]!).equals(slice(der, fields[5]!)), 'issuer bytes = subject bytes');
    // extension bytes exactly as sros2: 30 06 01 01 ff 02 01 01, flagged critical
    assert.ok(der.includes(Buffer.from('0603551d130101ff040830060101ff020101', 'hex')));
  });

  test('serial is a positive 20-byte integer, fresh each time; validity to the second', () => {
    const fields = tbsFields(ca.certFile);
    const serial = fields[1]!;
    assert.equal(serial.type, 'INTEGER');
    assert.equal(serial.length, 20);
    assert.match(serial.value, /^[0-7][0-9A-F]{39}$/);
    assert.notEqual(inspectCertificate(makeCa('ca2').certPem).serialHex, inspectCertificate(ca.certPem).serialHex);
    const x = new X509Certificate(ca.certPem);
    assert.equal(new Date(x.validFrom).getTime(), NOT_BEFORE.getTime());
    assert.equal(new Date(x.validTo).getTime(), NOT_AFTER.getTime());
    assert.ok(x.ca);
    const times = asn1parse(ca.certFile).filter((e) => e.type === 'UTCTIME');
    assert.equal(times.length, 2);
  });

  test('dates from 2050 on are GeneralizedTime, before 2050 UTCTime (RFC 5280)', () => {
    const keys = generateKeyPair();
    const pem = issueCertificate({
      subjectCN: 'sros2CA',
      publicKeyPem: keys.publicKeyPem,
      issuer: { keyPem: keys.privateKeyPem },
      notBefore: new Date('2049-12-31T23:59:59.999Z'),
      notAfter: new Date('2050-01-01T00:00:00Z'),
      profile: 'ca',
    });
    const f = file('y2050.pem', pem);
    const times = tbsFields(f)[4]!;
    const inner = asn1parse(f).filter((e) => e.offset > times.offset && e.offset < times.offset + times.headerLength + times.length);
    assert.deepEqual(
      inner.map((e) => `${e.type}:${e.value}`),
      ['UTCTIME:491231235959Z', 'GENERALIZEDTIME:20500101000000Z'],
    );
    assert.match(opensslOk(['x509', '-in', f, '-noout', '-enddate']), /Jan {2}1 00:00:00 2050 GMT/);
  });

  test('rejects bad specs with PkiError', () => {
    const keys = generateKeyPair();
    const base = { subjectCN: 'x', publicKeyPem: keys.publicKeyPem, issuer: { keyPem: keys.privateKeyPem }, notBefore: NOT_BEFORE, notAfter: NOT_AFTER, profile: 'ca' as const };
    assert.throws(() => issueCertificate({ ...base, notAfter: NOT_BEFORE }), /notAfter must be later/);
    assert.throws(() => issueCertificate({ ...base, subjectCN: '' }), PkiError);
    assert.throws(() => issueCertificate({ ...base, publicKeyPem: generateKeyPair().publicKeyPem }), /self-signed certificate needs the public key/);
    assert.throws(() => issueCertificate({ ...base, issuer: { keyPem: 'garbage' } }), /issuer key is not a valid PEM private key/);
    assert.throws(() => issueCertificate({ ...base, publicKeyPem: keys.privateKeyPem }), /subject public key is not a PEM public key/);
    const spki = crypto.createPublicKey(keys.publicKeyPem).export({ type: 'spki', format: 'der' });
    spki[spki.length - 1]! ^= 1; // y no longer matches x: off the curve
    const badPoint = crypto.createPublicKey(keys.publicKeyPem).export({ type: 'spki', format: 'pem' }).toString().replace(/(?<=-----\n)[\s\S]*(?=-----END)/, spki.toString('base64').replace(/.{64}/g, '$&\n') + '\n');
    assert.throws(() => issueCertificate({ ...base, publicKeyPem: badPoint }), PkiError);
    assert.throws(() => issueCertificate({ ...base, dnsNames: ['x'] }), /only allowed in tls-server/);
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    assert.throws(
      () => issueCertificate({ ...base, publicKeyPem: rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string, issuer: { keyPem: rsa.privateKey } }),
      /must be an EC key/,
    );
  });
});

describe('enclave certificate', () => {
  test('verifies under the CA, CN=/talker_listener/talker, one non-critical basicConstraints CA:FALSE', () => {
    const e = makeEnclave(ca, 'talker', '/talker_listener/talker');
    assert.match(opensslOk(['verify', '-CAfile', ca.certFile, e.certFile]), /: OK/);
    const text = opensslOk(['x509', '-in', e.certFile, '-noout', '-text']);
    assert.match(text, /Subject: CN = \/talker_listener\/talker/);
    assert.match(text, /Issuer: CN = sros2CA/);
    const ext = extensionsText(e.certFile);
    assert.equal(ext.match(/X509v3 /g)?.length, 2, ext);
    assert.match(ext, /X509v3 Basic Constraints: \n\s+CA:FALSE/);
    assert.doesNotMatch(ext, /critical/);
    // [3] { SEQUENCE { Extension { basicConstraints, OCTET STRING { 30 00 } } } }, byte for byte as sros2's
    const der = ders(e.certPem);
    assert.ok(der.includes(Buffer.from('a30d300b30090603551d1304023000', 'hex')));
    const fixtureFile = path.join(keystore, 'enclaves/talker_listener/talker/cert.pem');
    const fixtureExt = tbsFields(fixtureFile)[7]!;
    const ownExt = tbsFields(e.certFile)[7]!;
    assert.ok(slice(der, ownExt).equals(slice(ders(fs.readFileSync(fixtureFile, 'utf8')), fixtureExt)));
  });

  test('the key matches the certificate and the issuer bytes are the CA subject bytes', () => {
    const e = makeEnclave(ca, 'listener', '/talker_listener/listener');
    const keyFile = file('listener.key.pem', e.keys.privateKeyPem);
    assert.equal(opensslOk(['pkey', '-in', keyFile, '-pubout']), opensslOk(['x509', '-in', e.certFile, '-noout', '-pubkey']));
    assert.ok(keyMatchesCertificate(e.keys.privateKeyPem, e.certPem));
    assert.ok(!keyMatchesCertificate(generateKeyPair().privateKeyPem, e.certPem));
    const issuer = slice(ders(e.certPem), tbsFields(e.certFile)[3]!);
    const caSubject = slice(ders(ca.certPem), tbsFields(ca.certFile)[5]!);
    assert.ok(issuer.equals(caSubject));
    const subject = asn1parse(e.certFile).filter((x) => x.type === 'UTF8STRING').map((x) => x.value);
    assert.deepEqual(subject, ['sros2CA', '/talker_listener/listener']);
  });

  test('can be issued by the real sros2 CA (fixture) and accepted by openssl against it', () => {
    const caCertFile = path.join(keystore, 'public/ca.cert.pem');
    const sros2Ca: Ca = {
      keys: { privateKeyPem: fs.readFileSync(path.join(keystore, 'private/ca.key.pem'), 'utf8'), publicKeyPem: '' },
      certPem: fs.readFileSync(caCertFile, 'utf8'),
      certFile: caCertFile,
    };
    const e = makeEnclave(sros2Ca, 'reissued', '/talker_listener/talker');
    assert.match(opensslOk(['verify', '-CAfile', caCertFile, e.certFile]), /: OK/);
    const issuer = slice(ders(e.certPem), tbsFields(e.certFile)[3]!);
    const fixtureIssuer = slice(ders(fs.readFileSync(path.join(keystore, 'enclaves/talker_listener/talker/cert.pem'), 'utf8')), tbsFields(path.join(keystore, 'enclaves/talker_listener/talker/cert.pem'))[3]!);
    assert.ok(issuer.equals(fixtureIssuer));
    assert.ok(isSignedBy(e.certPem, sros2Ca.certPem));
    assert.ok(!isSignedBy(e.certPem, ca.certPem), 'same CN=sros2CA, different key');
  });

  test('an explicit serial is encoded as a positive minimal INTEGER', () => {
    const keys = generateKeyPair();
    const pem = issueCertificate({
      subjectCN: '/s',
      publicKeyPem: keys.publicKeyPem,
      issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem },
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      profile: 'enclave',
      serial: Buffer.from('00008001', 'hex'),
    });
    const f = file('serial.pem', pem);
    assert.equal(opensslOk(['x509', '-in', f, '-noout', '-serial']).trim(), 'serial=8001');
    assert.equal(tbsFields(f)[1]!.length, 3); // 00 80 01
    assert.equal(inspectCertificate(pem).serialHex, '8001');
    assert.throws(() => issueCertificate({ ...specOf(keys), serial: Buffer.alloc(3) }), /serial must be positive/);
    assert.throws(() => issueCertificate({ ...specOf(keys), serial: Buffer.alloc(20, 0xff) }), /20 octets/);
  });

  test('an issuer key that does not match the issuer certificate, or a non-CA issuer, is refused', () => {
    const keys = generateKeyPair();
    assert.throws(() => issueCertificate({ ...specOf(keys), issuer: { certPem: ca.certPem, keyPem: otherCa.keys.privateKeyPem } }), /issuer key does not match/);
    const leaf = makeEnclave(ca, 'leaf-issuer', '/x');
    assert.throws(() => issueCertificate({ ...specOf(keys), issuer: { certPem: leaf.certPem, keyPem: leaf.keys.privateKeyPem } }), /not a CA certificate/);
  });
});

function specOf(keys: KeyPair) {
  return {
    subjectCN: '/s',
    publicKeyPem: keys.publicKeyPem,
    issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem },
    notBefore: NOT_BEFORE,
    notAfter: NOT_AFTER,
    profile: 'enclave' as const,
  };
}

/** The DER SignedData of a .p7s written in openssl's layout. */
function cmsDer(p7s: string): Buffer {
  const start = p7s.indexOf('\n\n', p7s.indexOf('name="smime.p7s"')) + 2;
  return Buffer.from(p7s.slice(start, p7s.lastIndexOf('\n\n------')), 'base64');
}
function withCms(p7s: string, der: Buffer): string {
  const start = p7s.indexOf('\n\n', p7s.indexOf('name="smime.p7s"')) + 2;
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return p7s.slice(0, start) + b64 + p7s.slice(p7s.lastIndexOf('\n\n------'));
}

describe('S/MIME (.p7s)', () => {
  const signingTime = new Date('2026-11-26T12:34:56.789Z');
  let p7s: string;
  let p7sFile: string;
  before(() => {
    p7s = signSmime(GOVERNANCE_XML, signer(ca), signingTime);
    p7sFile = file('governance.p7s', p7s);
  });

  test('openssl smime -verify -text accepts it and prints the XML', () => {
    const r = openssl(['smime', '-verify', '-text', '-in', p7sFile, '-CAfile', ca.certFile]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.stderr, /Verification successful/);
    assert.equal(r.stdout.replace(/\r\n/g, '\n'), GOVERNANCE_XML);
  });

  test('strict: signed by the CA certificate itself (-nointern -certfile ca)', () => {
    const r = openssl(['smime', '-verify', '-text', '-nointern', '-certfile', ca.certFile, '-CAfile', ca.certFile, '-in', p7sFile]);
    assert.equal(r.status, 0, r.out);
  });

  test('CMS structure: v1, detached, SHA-256, embedded signer, contentType/signingTime/messageDigest in DER order', () => {
    const derFile = file('governance.p7s.der', cmsDer(p7s));
    const printed = opensslOk(['cms', '-cmsout', '-print', '-inform', 'DER', '-in', derFile]);
    assert.match(printed, /contentType: pkcs7-signedData/);
    assert.match(printed, /d\.signedData: \n\s+version: 1/);
    assert.match(printed, /digestAlgorithms:\s+algorithm: sha256 \(2\.16\.840\.1\.101\.3\.4\.2\.1\)/);
    assert.match(printed, /eContentType: pkcs7-data[\s\S]*eContent: <ABSENT>/);
    assert.match(printed, /certificates:\s+d\.certificate:/);
    assert.match(printed, /signerInfos:\s+version: 1\s+d\.issuerAndSerialNumber:\s+issuer: CN=sros2CA/);
    assert.match(printed, /signatureAlgorithm: \s+algorithm: ecdsa-with-SHA256/);
    const attrs = [...printed.matchAll(/object: (\w+) \(1\.2\.840\.113549\.1\.9\.\d+\)/g)].map((m) => m[1]);
    assert.deepEqual(attrs, ['contentType', 'signingTime', 'messageDigest']);
    assert.match(printed, /UTCTIME:Nov 26 12:34:56 2026 GMT/);
    const digest = crypto
      .createHash('sha256')
      .update('Content-Type: text/plain\r\n\r\n' + GOVERNANCE_XML.replace(/\n/g, '\r\n'))
      .digest('hex');
    const printedDigest = printed
      .slice(printed.indexOf('messageDigest'))
      .split('\n')
      .map((l) => /^\s*[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -])*[0-9a-f]{2})/.exec(l)?.[1]?.replace(/[ -]/g, ''))
      .filter((hex) => hex !== undefined)
      .slice(0, 3)
      .join('');
    assert.equal(printedDigest, digest);
    const serial = inspectCertificate(ca.certPem).serialHex;
    assert.match(printed, new RegExp(`serialNumber: 0x${serial}`));
    // openssl's own parse of the embedded certificate is the CA certificate
    const embedded = opensslOk(['pkcs7', '-inform', 'DER', '-in', derFile, '-print_certs']);
    assert.equal(new X509Certificate(embedded).fingerprint256, new X509Certificate(ca.certPem).fingerprint256);
  });

  test('MIME layout is openssl\'s: headers, preamble, CRLF only inside the signed part, base64 in 64 columns', () => {
    const lines = p7s.split('\n');
    assert.equal(lines[0], 'MIME-Version: 1.0');
    const m = /^Content-Type: multipart\/signed; protocol="application\/x-pkcs7-signature"; micalg="sha-256"; boundary="(----[0-9A-F]{32})"$/.exec(lines[1]!);
    assert.ok(m, lines[1]);
    const boundary = m[1]!;
    assert.deepEqual(lines.slice(2, 7), ['', 'This is an S/MIME signed message', '', `--${boundary}`, 'Content-Type: text/plain\r']);
    assert.equal(lines[7], '\r');
    const sigStart = lines.indexOf(`--${boundary}`, 6);
    assert.equal(lines[sigStart - 1], '', 'LF before the delimiter');
    const signedLines = lines.slice(5 + 1, sigStart - 1);
    assert.ok(signedLines.every((l) => l.endsWith('\r')), 'every signed line ends CRLF');
    assert.deepEqual(lines.slice(sigStart + 1, sigStart + 5), [
      'Content-Type: application/x-pkcs7-signature; name="smime.p7s"',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename="smime.p7s"',
      '',
    ]);
    const b64 = lines.slice(sigStart + 5, lines.indexOf('', sigStart + 5));
    assert.ok(b64.slice(0, -1).every((l) => l.length === 64));
    assert.ok(b64[b64.length - 1]!.length <= 64 && b64[b64.length - 1]!.length > 0);
    assert.deepEqual(lines.slice(sigStart + 5 + b64.length), ['', `--${boundary}--`, '', '']);
    const outside = [...lines.slice(0, 6), ...lines.slice(sigStart)];
    assert.ok(outside.every((l) => !l.includes('\r')));
    // same skeleton as the sros2 fixture (boundary and base64 aside)
    const skeleton = (s: string) =>
      s
        .replace(/-{4}[0-9A-F]{32}/g, 'B')
        .split('\n')
        .filter((l) => !/^[A-Za-z0-9+/=]{1,64}$/.test(l))
        .join('\n');
    const fixture = fs.readFileSync(path.join(keystore, 'enclaves/governance.p7s'), 'utf8');
    assert.equal(skeleton(p7s), skeleton(fixture));
  });

  test('verifySmime returns the XML with LF and the signer certificate', () => {
    const v = verifySmime(p7s, ca.certPem);
    assert.equal(v.content, GOVERNANCE_XML);
    assert.equal(new X509Certificate(v.signerCertPem).fingerprint256, new X509Certificate(ca.certPem).fingerprint256);
    // a file whose line ends were all turned into CRLF (or read as Buffer) is the same document
    assert.equal(verifySmime(p7s.replace(/\r?\n/g, '\r\n'), ca.certPem).content, GOVERNANCE_XML);
    assert.equal(verifySmime(Buffer.from(p7s), ca.certPem).content, GOVERNANCE_XML);
    const crlfFile = file('crlf.p7s', p7s.replace(/\r?\n/g, '\r\n'));
    assert.equal(openssl(['smime', '-verify', '-text', '-in', crlfFile, '-CAfile', ca.certFile]).status, 0);
  });

  test('tampering one byte of content makes openssl and verifySmime fail', () => {
    const at = p7s.indexOf('<id>0</id>');
    const tampered = p7s.slice(0, at) + '<id>1</id>' + p7s.slice(at + 10);
    const f = file('tampered.p7s', tampered);
    const r = openssl(['smime', '-verify', '-text', '-in', f, '-CAfile', ca.certFile]);
    assert.notEqual(r.status, 0);
    assert.match(r.out, /digest failure/);
    assert.throws(() => verifySmime(tampered, ca.certPem, { label: 'governance.p7s' }), (err: unknown) => {
      assert.ok(err instanceof PkiError);
      assert.equal(err.message, 'governance.p7s signature does not match its content');
      return true;
    });
    // a flipped bit in the signature value itself (the last byte of the DER is the end of s)
    const der = cmsDer(p7s);
    der[der.length - 1]! ^= 0x01;
    const badSig = withCms(p7s, der);
    assert.notEqual(openssl(['smime', '-verify', '-text', '-in', file('badsig.p7s', badSig), '-CAfile', ca.certFile]).status, 0);
    assert.throws(() => verifySmime(badSig, ca.certPem, { label: 'governance.p7s' }), /^PkiError: governance\.p7s signature does not match its content$/);
  });

  test('content edge cases: no final newline, CRLF input, UTF-8, trailing CRs', () => {
    for (const content of ['<a>no newline</a>', '<a>\r\n  crlf\r\n</a>\r\n', '<a>ünïcødé ✓</a>\n', '<a>\n\n\n</a>\n\n', 'x\r\r\ny\r']) {
      const signed = signSmime(content, signer(ca));
      const f = file('edge.p7s', signed);
      const r = openssl(['smime', '-verify', '-text', '-in', f, '-CAfile', ca.certFile]);
      assert.equal(r.status, 0, `${JSON.stringify(content)}: ${r.out}`);
      const expected = content.replace(/\r*\n/g, '\n').replace(/\r+$/, '');
      assert.equal(r.stdout.replace(/\r\n/g, '\n'), expected);
      assert.equal(verifySmime(signed, ca.certPem).content, expected);
    }
  });

  test('a signingTime from 2050 on is GeneralizedTime', () => {
    const signed = signSmime('<a/>', signer(ca), new Date('2051-02-03T04:05:06Z'));
    const printed = opensslOk(['cms', '-cmsout', '-print', '-inform', 'DER', '-in', file('t2051.der', cmsDer(signed))]);
    assert.match(printed, /GENERALIZEDTIME:Feb {2}3 04:05:06 2051 GMT/);
  });

  test('verifySmime accepts the sros2 fixture .p7s files', () => {
    const fixtureCa = fs.readFileSync(path.join(keystore, 'public/permissions_ca.cert.pem'), 'utf8');
    for (const [p7sRel, xmlRel] of [
      ['enclaves/governance.p7s', 'enclaves/governance.xml'],
      ['enclaves/talker_listener/talker/permissions.p7s', 'enclaves/talker_listener/talker/permissions.xml'],
      ['enclaves/talker_listener/listener/permissions.p7s', 'enclaves/talker_listener/listener/permissions.xml'],
    ] as const) {
      const v = verifySmime(fs.readFileSync(path.join(keystore, p7sRel), 'utf8'), fixtureCa);
      assert.equal(v.content, fs.readFileSync(path.join(keystore, xmlRel), 'utf8'), p7sRel);
      assert.equal(v.signerCertPem, fixtureCa);
    }
    // and not against another CA that carries the same name
    assert.throws(
      () => verifySmime(fs.readFileSync(path.join(keystore, 'enclaves/governance.p7s'), 'utf8'), ca.certPem, { label: 'governance.p7s' }),
      /^PkiError: governance\.p7s signer does not chain to the permissions CA$/,
    );
  });

  test('verifySmime accepts what openssl smime -sign -text makes with our CA', () => {
    const keyFile = file('ca.key.pem', ca.keys.privateKeyPem);
    const xmlFile = file('gov.xml', GOVERNANCE_XML);
    const out = opensslOk(['smime', '-sign', '-text', '-md', 'sha256', '-in', xmlFile, '-signer', ca.certFile, '-inkey', keyFile]);
    assert.equal(verifySmime(out, ca.certPem).content, GOVERNANCE_XML);
  });

  test('verifySmime accepts an openssl-made RSA permissions CA (imported keystores may use one)', () => {
    const rsaKey = file('rsa-ca.key.pem');
    const rsaCert = file('rsa-ca.cert.pem');
    opensslOk(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', rsaKey, '-out', rsaCert, '-subj', '/CN=sros2CA', '-days', '30']);
    const signed = opensslOk(['smime', '-sign', '-text', '-md', 'sha256', '-in', file('gov.xml', GOVERNANCE_XML), '-signer', rsaCert, '-inkey', rsaKey]);
    assert.equal(verifySmime(signed, fs.readFileSync(rsaCert, 'utf8')).content, GOVERNANCE_XML);
    assert.throws(() => verifySmime(signed, ca.certPem), /does not chain/);
  });

  test('verifySmime rejects a document signed by another CA', () => {
    const foreign = signSmime(GOVERNANCE_XML, signer(otherCa));
    assert.throws(() => verifySmime(foreign, ca.certPem, { label: 'permissions.p7s' }), /^PkiError: permissions\.p7s signer does not chain to the permissions CA$/);
    assert.notEqual(openssl(['smime', '-verify', '-text', '-in', file('foreign.p7s', foreign), '-CAfile', ca.certFile]).status, 0);
  });

  test('verifySmime rejects a document signed by an enclave key that chains to the CA', () => {
    const e = makeEnclave(ca, 'rogue', '/rogue');
    const rogue = signSmime(GOVERNANCE_XML, { certPem: e.certPem, keyPem: e.keys.privateKeyPem });
    const f = file('rogue.p7s', rogue);
    // Cyclone 0.10 and plain openssl accept it (cyclonedds#1546): the strict rule is what catches it.
    assert.equal(openssl(['smime', '-verify', '-text', '-in', f, '-CAfile', ca.certFile, '-purpose', 'any']).status, 0);
    assert.notEqual(openssl(['smime', '-verify', '-text', '-nointern', '-certfile', ca.certFile, '-CAfile', ca.certFile, '-in', f]).status, 0);
    assert.throws(
      () => verifySmime(rogue, ca.certPem, { label: 'permissions.p7s' }),
      /^PkiError: permissions\.p7s is signed by a certificate issued by the permissions CA, not by the permissions CA certificate itself$/,
    );
  });

  test('verifySmime rejects documents not in the DDS form', () => {
    const keyFile = file('ca.key.pem', ca.keys.privateKeyPem);
    const xmlFile = file('gov.xml', GOVERNANCE_XML);
    const noText = opensslOk(['smime', '-sign', '-md', 'sha256', '-in', xmlFile, '-signer', ca.certFile, '-inkey', keyFile]);
    assert.throws(() => verifySmime(noText, ca.certPem), /signed without S\/MIME text mode/);
    const pemBlob = opensslOk(['smime', '-sign', '-text', '-md', 'sha256', '-outform', 'PEM', '-in', xmlFile, '-signer', ca.certFile, '-inkey', keyFile]);
    assert.throws(() => verifySmime(pemBlob, ca.certPem), /PEM PKCS#7 blob/);
    assert.throws(() => verifySmime(GOVERNANCE_XML, ca.certPem), /not an S\/MIME multipart\/signed document/);
    const noCerts = opensslOk(['smime', '-sign', '-text', '-nocerts', '-md', 'sha256', '-in', xmlFile, '-signer', ca.certFile, '-inkey', keyFile]);
    assert.throws(() => verifySmime(noCerts, ca.certPem), /does not embed its signer certificate/);
    const truncated = p7s.slice(0, p7s.lastIndexOf('------'));
    assert.throws(() => verifySmime(truncated, ca.certPem), /not a complete two-part/);
    const damaged = p7s.replace(/\n([A-Za-z0-9+/]{10})/, '\n!$1');
    assert.throws(() => verifySmime(damaged, ca.certPem), PkiError);
    const sha1 = opensslOk(['smime', '-sign', '-text', '-md', 'sha1', '-in', xmlFile, '-signer', ca.certFile, '-inkey', keyFile]);
    assert.throws(() => verifySmime(sha1, ca.certPem), /unsupported digest algorithm/);
  });

  test('verifySmime checks the signer certificate dates unless told not to', () => {
    assert.throws(() => verifySmime(p7s, ca.certPem, { at: new Date(NOT_AFTER.getTime() + 1000) }), /signer certificate has expired/);
    assert.throws(() => verifySmime(p7s, ca.certPem, { at: new Date(NOT_BEFORE.getTime() - 1000) }), /not yet valid/);
    assert.equal(verifySmime(p7s, ca.certPem, { at: null }).content, GOVERNANCE_XML);
  });

  test('signSmime refuses a key that is not the certificate\'s', () => {
    assert.throws(() => signSmime('<a/>', { certPem: ca.certPem, keyPem: otherCa.keys.privateKeyPem }), /signer key does not match/);
  });
});

describe('CRL', () => {
  test('openssl verifies it; the revoked certificate fails -crl_check, the others pass', () => {
    const revoked = makeEnclave(ca, 'revoked', '/fleet/revoked');
    const good = makeEnclave(ca, 'good', '/fleet/good');
    const serial = inspectCertificate(revoked.certPem).serialHex;
    const crl = issueCrl({
      issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem },
      revoked: [{ serialHex: serial.replace(/(..)(?!$)/g, '$1:'), revokedAt: new Date(NOW.getTime() - 60_000) }],
      thisUpdate: NOT_BEFORE,
      nextUpdate: new Date(NOW.getTime() + 7 * DAY),
      crlNumber: 7,
    });
    assert.match(crl, /^-----BEGIN X509 CRL-----\n[\s\S]+-----END X509 CRL-----\n$/);
    const crlFile = file('crl.pem', crl);
    const r = openssl(['crl', '-in', crlFile, '-noout', '-verify', '-CAfile', ca.certFile, '-text']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.stderr, /verify OK/);
    assert.match(r.stdout, /Version 2 \(0x1\)/);
    assert.match(r.stdout, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(r.stdout, /Issuer: CN = sros2CA/);
    assert.match(r.stdout, /X509v3 CRL Number: \n\s+7/);
    assert.match(r.stdout, /X509v3 Authority Key Identifier/);
    assert.match(r.stdout, new RegExp(`Serial Number: ${serial}`));

    const bad = openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', ca.certFile, revoked.certFile]);
    assert.notEqual(bad.status, 0);
    assert.match(bad.out, /certificate revoked/);
    const ok = openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', ca.certFile, good.certFile]);
    assert.equal(ok.status, 0, ok.out);
  });

  test('an empty CRL omits revokedCertificates and still verifies; a CRL from another CA is rejected', () => {
    const crl = issueCrl({ issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem }, revoked: [], thisUpdate: NOT_BEFORE, nextUpdate: NOT_AFTER, crlNumber: 0 });
    const crlFile = file('empty-crl.pem', crl);
    const r = openssl(['crl', '-in', crlFile, '-noout', '-verify', '-CAfile', ca.certFile, '-text']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.stdout, /No Revoked Certificates/);
    const good = makeEnclave(ca, 'good2', '/fleet/good2');
    assert.equal(openssl(['verify', '-crl_check', '-CRLfile', crlFile, '-CAfile', ca.certFile, good.certFile]).status, 0);
    const foreign = file('foreign-crl.pem', issueCrl({ issuer: { certPem: otherCa.certPem, keyPem: otherCa.keys.privateKeyPem }, revoked: [], thisUpdate: NOT_BEFORE, nextUpdate: NOT_AFTER, crlNumber: 1 }));
    // (openssl 3.0 crl -verify reports a bad signature on stderr but exits 0)
    assert.match(openssl(['crl', '-in', foreign, '-noout', '-verify', '-CAfile', ca.certFile]).out, /verify failure/);
    assert.throws(
      () => issueCrl({ issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem }, revoked: [{ serialHex: 'xyz', revokedAt: NOW }], thisUpdate: NOT_BEFORE, nextUpdate: NOT_AFTER, crlNumber: 1 }),
      /not a hexadecimal certificate serial/,
    );
  });
});

describe('TLS certificates', () => {
  test('tls-server: SANs, serverAuth, keyUsage; a real HTTPS server pinned by its CA works for 127.0.0.1 and localhost', async () => {
    const keys = generateKeyPair();
    const tlsCaKeys = generateKeyPair();
    const tlsCa = issueCertificate({
      subjectCN: 'enclave-server TLS CA',
      publicKeyPem: tlsCaKeys.publicKeyPem,
      issuer: { keyPem: tlsCaKeys.privateKeyPem },
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      profile: 'tls-ca',
    });
    const cert = issueCertificate({
      subjectCN: 'localhost',
      publicKeyPem: keys.publicKeyPem,
      issuer: { certPem: tlsCa, keyPem: tlsCaKeys.privateKeyPem },
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      profile: 'tls-server',
      dnsNames: ['localhost', 'enclaves.example.org'],
      ipAddresses: ['127.0.0.1', '::1', '2001:db8::ffff:192.0.2.1', 'fe80::1:2:3'],
    });
    const caText = extensionsText(file('tls-ca.pem', tlsCa));
    assert.match(caText, /Basic Constraints: critical\s+CA:TRUE/);
    assert.match(caText, /Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    const text = extensionsText(file('tls.pem', cert));
    assert.match(text, /DNS:localhost, DNS:enclaves\.example\.org, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:0:FFFF:C000:201, IP Address:FE80:0:0:0:0:1:2:3/);
    assert.match(text, /Extended Key Usage: \n\s+TLS Web Server Authentication/);
    assert.match(text, /Key Usage: critical\s+Digital Signature/);
    assert.match(text, /Basic Constraints: critical\s+CA:FALSE/);
    const ski = /Subject Key Identifier: \n\s+([0-9A-F:]+)/.exec(caText)?.[1];
    assert.ok(ski);
    assert.match(text, new RegExp(`Authority Key Identifier: \\n\\s+(keyid:)?${ski}`));
    assert.match(opensslOk(['verify', '-CAfile', file('tls-ca.pem'), '-purpose', 'sslserver', file('tls.pem')]), /OK/);

    const x = new X509Certificate(cert);
    assert.equal(x.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(x.checkHost('localhost'), 'localhost');

    const server = https.createServer({ key: keys.privateKeyPem, cert }, (_req, res) => res.end('hello'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const get = (host: string, servername?: string) =>
      new Promise<string>((resolve, reject) => {
        https
          .get({ host, port, path: '/', ca: tlsCa, family: 4, servername, agent: false }, (res) => {
            let body = '';
            res.on('data', (c) => (body += c));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    try {
      assert.equal(await get('127.0.0.1'), 'hello');
      assert.equal(await get('localhost'), 'hello');
      await assert.rejects(get('127.0.0.1', 'enclaves.invalid'), /altnames|Hostname\/IP does not match/);
      // pinning another CA fails
      await assert.rejects(
        new Promise((resolve, reject) => {
          https.get({ host: '127.0.0.1', port, ca: ca.certPem, agent: false }, resolve).on('error', reject);
        }),
        /self-signed|unable to (get|verify)/,
      );
    } finally {
      server.close();
    }
  });

  test('tls-server needs at least one name, and names must be valid', () => {
    const keys = generateKeyPair();
    const base = { subjectCN: 'x', publicKeyPem: keys.publicKeyPem, issuer: { certPem: ca.certPem, keyPem: ca.keys.privateKeyPem }, notBefore: NOT_BEFORE, notAfter: NOT_AFTER, profile: 'tls-server' as const };
    assert.throws(() => issueCertificate(base), /at least one DNS name or IP address/);
    assert.throws(() => issueCertificate({ ...base, ipAddresses: ['300.1.1.1'] }), /not an IP address/);
    assert.throws(() => issueCertificate({ ...base, dnsNames: ['bad name'] }), /not a valid DNS name/);
  });
});

describe('inspect', () => {
  test('inspectCertificate agrees with openssl on the sros2 fixture certificate', () => {
    const certFile = path.join(keystore, 'enclaves/talker_listener/talker/cert.pem');
    const pem = fs.readFileSync(certFile, 'utf8');
    const info = inspectCertificate(pem);
    assert.equal(info.subject, 'CN=/talker_listener/talker');
    assert.equal(info.subjectCN, '/talker_listener/talker');
    assert.equal(info.issuer, 'CN=sros2CA');
    assert.equal(`serial=${info.serialHex}`, opensslOk(['x509', '-in', certFile, '-noout', '-serial']).trim());
    assert.equal(`sha256 Fingerprint=${info.fingerprintSha256}`, opensslOk(['x509', '-in', certFile, '-noout', '-fingerprint', '-sha256']).trim());
    const dates = opensslOk(['x509', '-in', certFile, '-noout', '-startdate', '-enddate']);
    assert.equal(info.notBefore.getTime(), new Date(/notBefore=(.*)/.exec(dates)![1]!).getTime());
    assert.equal(info.notAfter.getTime(), new Date(/notAfter=(.*)/.exec(dates)![1]!).getTime());
    assert.equal(info.isCa, false);
    assert.equal(info.publicKeyPem, opensslOk(['x509', '-in', certFile, '-noout', '-pubkey']));
    const caInfo = inspectCertificate(fs.readFileSync(path.join(keystore, 'public/ca.cert.pem'), 'utf8'));
    assert.equal(caInfo.isCa, true);
    assert.equal(caInfo.subject, 'CN=sros2CA');
  });

  test('keyMatchesCertificate and isSignedBy on the fixture keystore', () => {
    const read = (rel: string) => fs.readFileSync(path.join(keystore, rel), 'utf8');
    assert.ok(keyMatchesCertificate(read('enclaves/talker_listener/talker/key.pem'), read('enclaves/talker_listener/talker/cert.pem')));
    assert.ok(!keyMatchesCertificate(read('enclaves/talker_listener/listener/key.pem'), read('enclaves/talker_listener/talker/cert.pem')));
    assert.ok(keyMatchesCertificate(read('private/ca.key.pem'), read('public/ca.cert.pem')));
    assert.ok(isSignedBy(read('enclaves/talker_listener/listener/cert.pem'), read('public/ca.cert.pem')));
    assert.ok(isSignedBy(read('public/ca.cert.pem'), read('public/ca.cert.pem')));
    assert.ok(!isSignedBy(read('enclaves/talker_listener/listener/cert.pem'), ca.certPem));
    assert.throws(() => isSignedBy('junk', ca.certPem), PkiError);
    assert.throws(() => inspectCertificate('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /not a valid X\.509 certificate/);
  });
});
