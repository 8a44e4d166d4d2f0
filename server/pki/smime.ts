import crypto from 'node:crypto';
import { PkiError } from './errors.js';
import {
  type Asn1,
  ECDSA_WITH_SHA256,
  OID,
  TYPE,
  algorithm,
  base64Lines,
  bytesOf,
  children,
  ctx,
  isContext,
  isUniversal,
  octets,
  oid,
  oidOf,
  parseDer,
  seq,
  set,
  smallInt,
  time,
  toDer,
  toPem,
} from './der.js';
import { type PrivateKeyInput, privateKeyObject, requireEcSigningKey } from './keys.js';
import { type ParsedCertificate, keyMatches, parseCertificate, parseCertificateDer } from './certificate.js';
import { randomBytes } from './random.js';

export interface SmimeSigner {
  certPem: string;
  keyPem: PrivateKeyInput;
}

export interface SmimeVerification {
  /** The signed text without its `Content-Type: text/plain` header, line ends back to LF. */
  content: string;
  signerCertPem: string;
}

export interface VerifySmimeOptions {
  /** Names the document in error messages, e.g. "permissions.p7s". */
  label?: string;
  /** Instant at which the signer certificate must be valid; null skips the check. Default: now. */
  at?: Date | null;
}

const TEXT_HEADER = 'Content-Type: text/plain\r\n\r\n';
const SHA256_ALG = algorithm(OID.sha256, true); // OpenSSL writes the NULL parameter here

/**
 * The bytes an S/MIME text-mode signature covers, the way OpenSSL reads them back: every line
 * ends in CRLF (trailing CRs folded, as OpenSSL strips them per line) after a text/plain header.
 */
export function smimeSignedBytes(content: string): string {
  // Most documents have plain LF line ends: a native replaceAll is several times faster than the regexes.
  if (!content.includes('\r')) return TEXT_HEADER + content.replaceAll('\n', '\r\n');
  return TEXT_HEADER + content.replace(/\r*\n/g, '\r\n').replace(/\r+$/, '');
}

function encodedAttribute(type: string, value: Asn1): { node: Asn1; der: Buffer } {
  const node = seq(oid(type), set(value));
  return { node, der: toDer(node) };
}

/**
 * Signs a governance/permissions document as DDS-Security expects: detached S/MIME
 * (multipart/signed, text mode), CMS SignedData v1 with SHA-256, signer certificate embedded,
 * signed attributes contentType, signingTime and messageDigest. Byte layout follows
 * `openssl smime -sign -text -md sha256`.
 */
export function signSmime(content: string, signer: SmimeSigner, signingTime: Date = new Date()): string {
  const cert = parseCertificate(signer.certPem, 'signer certificate');
  const key = privateKeyObject(signer.keyPem, 'signer key');
  requireEcSigningKey(key, 'signer key');
  if (!keyMatches(cert, key)) throw new PkiError('signer key does not match the signer certificate');

  const signed = smimeSignedBytes(content);
  const digest = crypto.createHash('sha256').update(signed, 'utf8').digest();

  // DER encodes a SET OF in the order of its elements' encodings, not in insertion order.
  const attributes = [
    encodedAttribute(OID.contentType, oid(OID.data)),
    encodedAttribute(OID.signingTime, time(signingTime)),
    encodedAttribute(OID.messageDigest, octets(digest)),
  ].sort((a, b) => Buffer.compare(a.der, b.der));
  // The signature covers the attributes encoded as a SET (tag 31), while they travel as [0] IMPLICIT.
  const attributesSet = toDer(set(...attributes.map((a) => a.node)));
  const signature = crypto.sign('sha256', attributesSet, { key, dsaEncoding: 'der' });

  const contentInfo = seq(
    oid(OID.signedData),
    ctx(
      0,
      seq(
        smallInt(1),
        set(SHA256_ALG),
        seq(oid(OID.data)),
        ctx(0, cert.node),
        set(
          seq(
            smallInt(1),
            seq(cert.issuer, cert.serial),
            SHA256_ALG,
            ctx(0, ...attributes.map((a) => a.node)),
            ECDSA_WITH_SHA256,
            octets(signature),
          ),
        ),
      ),
    ),
  );

  const boundary = '----' + randomBytes(16).toString('hex').toUpperCase();
  return (
    'MIME-Version: 1.0\n' +
    `Content-Type: multipart/signed; protocol="application/x-pkcs7-signature"; micalg="sha-256"; boundary="${boundary}"\n\n` +
    'This is an S/MIME signed message\n\n' +
    `--${boundary}\n${signed}\n--${boundary}\n` +
    'Content-Type: application/x-pkcs7-signature; name="smime.p7s"\n' +
    'Content-Transfer-Encoding: base64\n' +
    'Content-Disposition: attachment; filename="smime.p7s"\n\n' +
    base64Lines(toDer(contentInfo)) +
    `\n--${boundary}--\n\n`
  );
}

// ----- verification ------------------------------------------------------------------------

interface Header {
  value: string;
  params: Map<string, string>;
}

/** Parses RFC 822 style header lines (already unfolded) into lower-cased names. */
function parseHeaders(lines: string[]): Map<string, Header> {
  const headers = new Map<string, Header>();
  const unfolded: string[] = [];
  for (const line of lines) {
    if (/^[ \t]/.test(line) && unfolded.length > 0) unfolded[unfolded.length - 1] += ' ' + line.trim();
    else unfolded.push(line);
  }
  for (const line of unfolded) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const [value = '', ...rest] = splitParams(line.slice(colon + 1));
    const params = new Map<string, string>();
    for (const p of rest) {
      const eq = p.indexOf('=');
      if (eq <= 0) continue;
      let v = p.slice(eq + 1).trim();
      if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
      params.set(p.slice(0, eq).trim().toLowerCase(), v);
    }
    headers.set(name, { value: value.trim().toLowerCase(), params });
  }
  return headers;
}

/** Splits on `;` outside double quotes. */
function splitParams(text: string): string[] {
  const out: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') quoted = !quoted;
    if (c === '\\' && quoted && i + 1 < text.length) {
      current += c + text[++i]!;
      continue;
    }
    if (c === ';' && !quoted) {
      out.push(current);
      current = '';
    } else current += c;
  }
  out.push(current);
  return out;
}

/** Header lines up to the first empty line, and the index of the line after it. */
function headerBlock(lines: string[], from: number): { headers: Map<string, Header>; next: number } {
  let i = from;
  while (i < lines.length && lines[i] !== '') i++;
  return { headers: parseHeaders(lines.slice(from, i)), next: i + 1 };
}

const DIGESTS = new Map<string, string>([
  [OID.sha256, 'sha256'],
  [OID.sha384, 'sha384'],
  [OID.sha512, 'sha512'],
]);
const EC_SIGNATURES = new Set<string>([OID.ecdsaWithSha256, OID.ecdsaWithSha384, OID.ecdsaWithSha512, OID.ecPublicKey]);
const RSA_SIGNATURES = new Set<string>([OID.rsaEncryption, OID.sha256WithRsa, OID.sha384WithRsa, OID.sha512WithRsa]);
/** Signature algorithms that name their own hash; the bare key-type OIDs use the digestAlgorithm's. */
const SIGNATURE_HASHES = new Map<string, string>([
  [OID.ecdsaWithSha256, 'sha256'],
  [OID.ecdsaWithSha384, 'sha384'],
  [OID.ecdsaWithSha512, 'sha512'],
  [OID.sha256WithRsa, 'sha256'],
  [OID.sha384WithRsa, 'sha384'],
  [OID.sha512WithRsa, 'sha512'],
]);

/**
 * Verifies an S/MIME (.p7s) document signed by the permissions CA, as a DDS-Security participant
 * would, plus the stricter rule of newer DDS releases: the signer must be the CA certificate itself,
 * not just any certificate issued by it (an enclave's own key could otherwise sign permissions).
 */
export function verifySmime(
  p7s: string | Buffer,
  caCertPem: string,
  options: VerifySmimeOptions = {},
): SmimeVerification {
  const label = options.label ?? 'signed document';
  const fail: (problem: string, cause?: unknown) => never = (problem, cause) => {
    throw new PkiError(`${label} ${problem}`, { cause, code: 'invalid-signature' });
  };
  const ca = parseCertificate(caCertPem, 'CA certificate');

  // Work on bytes as latin1 (one char per byte) so the digest sees exactly what was signed.
  const text = (typeof p7s === 'string' ? Buffer.from(p7s, 'utf8') : p7s).toString('latin1');
  if (/^\s*-----BEGIN (PKCS7|CMS)/.test(text)) fail('is a PEM PKCS#7 blob, not S/MIME (sign with openssl smime -sign -text)');
  // OpenSSL reads S/MIME line by line and strips every line's trailing CR/LF, so LF and CRLF files
  // (and a text part re-encoded either way in transit) are equivalent.
  const lines = text.split('\n').map((l) => l.replace(/\r+$/, ''));
  const top = headerBlock(lines, 0);
  const contentType = top.headers.get('content-type');
  const boundary = contentType?.params.get('boundary');
  if (contentType?.value !== 'multipart/signed' || boundary === undefined || boundary === '') {
    fail('is not an S/MIME multipart/signed document');
  }
  const delimiter = `--${boundary}`;
  const parts: string[][] = [];
  let current: string[] | undefined;
  let closed = false;
  for (let i = top.next; i < lines.length && !closed; i++) {
    const line = lines[i]!;
    if (line.startsWith(delimiter)) {
      const rest = line.slice(delimiter.length).trimEnd();
      if (rest === '' || rest === '--') {
        if (current !== undefined) parts.push(current);
        current = [];
        closed = rest === '--';
        continue;
      }
    }
    current?.push(line);
  }
  if (!closed || parts.length !== 2) fail('is not a complete two-part S/MIME multipart/signed document');
  const [textPart, signaturePart] = parts as [string[], string[]];

  // The signed bytes: the text part's lines joined with CRLF (the line break before a delimiter
  // belongs to the delimiter).
  const signed = textPart.join('\r\n');
  const headerEnd = signed.indexOf('\r\n\r\n');
  const textHeaders = parseHeaders(headerEnd < 0 ? [] : signed.slice(0, headerEnd).split('\r\n'));
  if (headerEnd < 0 || textHeaders.get('content-type')?.value !== 'text/plain') {
    fail('was signed without S/MIME text mode (no "Content-Type: text/plain" header in the signed part)');
  }

  const sigHeaders = headerBlock(signaturePart, 0);
  const sigType = sigHeaders.headers.get('content-type')?.value;
  if (sigType !== 'application/x-pkcs7-signature' && sigType !== 'application/pkcs7-signature') {
    fail('has no application/pkcs7-signature part');
  }
  const encoding = sigHeaders.headers.get('content-transfer-encoding')?.value ?? 'base64';
  const body = signaturePart.slice(sigHeaders.next).join('');
  if (encoding !== 'base64' || !/^[A-Za-z0-9+/=\s]+$/.test(body)) fail('signature part is not base64');

  const cms = readSignedData(Buffer.from(body, 'base64'), fail);

  const contentDigest = crypto.createHash(cms.digestName).update(signed, 'latin1').digest();
  if (!contentDigest.equals(cms.messageDigest)) fail('signature does not match its content');

  const signerCert = cms.certificates.find((c) => cms.identifies(c));
  if (signerCert === undefined) fail('does not embed its signer certificate');

  const keyType = signerCert.x509.publicKey.asymmetricKeyType;
  const allowed = keyType === 'ec' ? EC_SIGNATURES : keyType === 'rsa' ? RSA_SIGNATURES : undefined;
  if (allowed === undefined || !allowed.has(cms.signatureAlgorithm)) fail('uses an unsupported signature algorithm');
  let valid = false;
  try {
    const signatureHash = SIGNATURE_HASHES.get(cms.signatureAlgorithm) ?? cms.digestName;
    valid = crypto.verify(signatureHash, cms.signedAttributes, signerCert.x509.publicKey, cms.signature);
  } catch (cause) {
    fail('signature does not match its content', cause);
  }
  if (!valid) fail('signature does not match its content');

  if (!signerCert.x509.verify(ca.x509.publicKey)) fail('signer does not chain to the permissions CA');
  if (!signerCert.der.equals(ca.der)) {
    fail('is signed by a certificate issued by the permissions CA, not by the permissions CA certificate itself');
  }
  const at = options.at === undefined ? new Date() : options.at;
  if (at !== null) {
    if (at < signerCert.notBefore) fail('signer certificate is not yet valid');
    if (at > signerCert.notAfter) fail('signer certificate has expired');
  }

  const content = Buffer.from(signed.slice(headerEnd + 4), 'latin1').toString('utf8').replace(/\r\n/g, '\n');
  return { content, signerCertPem: toPem('CERTIFICATE', signerCert.der) };
}

interface SignedDataView {
  digestName: string;
  messageDigest: Buffer;
  /** DER of the signed attributes as the SET OF the signature covers. */
  signedAttributes: Buffer;
  signatureAlgorithm: string;
  signature: Buffer;
  certificates: ParsedCertificate[];
  identifies: (cert: ParsedCertificate) => boolean;
}

function readSignedData(der: Buffer, fail: (problem: string, cause?: unknown) => never): SignedDataView {
  const malformed = (cause?: unknown): never => fail('signature part is not a valid CMS SignedData structure', cause);
  let root: Asn1;
  try {
    root = parseDer(der);
  } catch (cause) {
    return malformed(cause);
  }
  const [contentType, wrapped] = children(root);
  if (oidOf(contentType) !== OID.signedData || !isContext(wrapped, 0)) return malformed();
  const sd = children(children(wrapped)[0]);
  const encap = children(sd[2]);
  if (!isUniversal(sd[0], TYPE.INTEGER) || oidOf(encap[0]) !== OID.data) return malformed();
  if (encap.length > 1) fail('is not a detached signature (it embeds its content)');
  let index = 3;
  let certificates: ParsedCertificate[] = [];
  if (isContext(sd[index], 0)) {
    try {
      certificates = children(sd[index]).map((c) => parseCertificateDer(toDer(c), 'embedded certificate'));
    } catch (cause) {
      return malformed(cause);
    }
    index++;
  }
  if (isContext(sd[index], 1)) index++; // CRLs: not used here
  const signerInfos = children(sd[index]);
  if (!isUniversal(sd[index], TYPE.SET) || signerInfos.length !== 1) fail('must have exactly one signer');
  const si = children(signerInfos[0]);
  const [, sid, digestAlg, attrs] = si;
  const digestName = DIGESTS.get(oidOf(children(digestAlg)[0]) ?? '');
  if (digestName === undefined) fail('uses an unsupported digest algorithm (SHA-256 expected)');
  if (!isContext(attrs, 0)) fail('has no signed attributes');
  const signatureAlgorithm = oidOf(children(si[4])[0]);
  if (signatureAlgorithm === undefined || !isUniversal(si[5], TYPE.OCTETSTRING)) return malformed();

  let messageDigest: Buffer | undefined;
  let contentTypeSeen = false;
  const seen = new Set<string>();
  for (const attr of children(attrs)) {
    const [type, values] = children(attr);
    const name = oidOf(type) ?? '';
    if (seen.has(name)) fail('has a duplicated signed attribute');
    seen.add(name);
    const value = children(values);
    if (name === OID.messageDigest) {
      if (value.length !== 1 || !isUniversal(value[0], TYPE.OCTETSTRING)) return malformed();
      messageDigest = bytesOf(value[0]);
    } else if (name === OID.contentType) {
      if (value.length !== 1 || oidOf(value[0]) !== OID.data) fail('has a contentType attribute other than data');
      contentTypeSeen = true;
    }
  }
  if (messageDigest === undefined || !contentTypeSeen) fail('lacks the contentType or messageDigest signed attribute');

  let identifies: (cert: ParsedCertificate) => boolean;
  if (isContext(sid, 0)) {
    const keyId = bytesOf(sid);
    identifies = (cert) => cert.subjectKeyId !== undefined && cert.subjectKeyId.equals(keyId);
  } else {
    const [issuer, serial] = children(sid);
    if (issuer === undefined || !isUniversal(serial, TYPE.INTEGER)) return malformed();
    const issuerDer = toDer(issuer);
    const serialDer = toDer(serial);
    identifies = (cert) => cert.issuerDer.equals(issuerDer) && toDer(cert.serial).equals(serialDer);
  }

  return {
    digestName,
    messageDigest,
    // DER re-encoding with the universal SET tag, as RFC 5652 5.4 prescribes for the signature input.
    signedAttributes: toDer(set(...children(attrs))),
    signatureAlgorithm,
    signature: bytesOf(si[5]),
    certificates,
    identifies,
  };
}
