/**
 * The only module that touches X.509/CMS. PEM in, PEM out; keys and signatures from node:crypto,
 * DER layout through node-forge's ASN.1 layer. Everything is synchronous: issuing an enclave is a
 * few hundred microseconds of CPU and async wrappers would only add overhead.
 */
export { PkiError } from './errors.js';
export { type KeyPair, type PrivateKeyInput, type PublicKeyInput, generateKeyPair, publicKeyFromPrivate } from './keys.js';
export { type CertificateProfile, type CertificateSpec, issueCertificate, randomSerial } from './x509.js';
export { type CheckedCsr, readCsr } from './csr.js';
export { toPem } from './der.js';
export { type SmimeSigner, type SmimeVerification, type VerifySmimeOptions, signSmime, verifySmime } from './smime.js';
export { type CrlSpec, type RevokedCertificate, canonicalSerial, issueCrl, readCrl } from './crl.js';
export { type CertificateInfo, inspectCertificate, isSignedBy, keyMatchesCertificate } from './inspect.js';
