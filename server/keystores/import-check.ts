/**
 * Small, pure checks used when importing an sros2 keystore: reading governance and permissions XML,
 * comparing signed text with its XML, comparing distinguished names, and validity windows.
 * Each returns problems as short public messages; the caller prefixes what file they are about.
 */
import { DOMParser, onErrorStopParsing } from '@xmldom/xmldom';
import type { Document, Element, Node } from '@xmldom/xmldom';
import { canonicalSerial, PkiError, readCrl } from '../pki/index.js';
import { domainIdProblem } from '../policy/names.js';
import { elementDepth, hasDoctype, MAX_XML_DEPTH, tagDepthExceeds } from '../policy/xml.js';

const ELEMENT_NODE = 1;
const DAY_MS = 86_400_000;

/**
 * How far in the future a certificate's (or grant's) start may be and still be accepted: one day.
 * sros2 back-dates by a day; a keystore generated on a machine whose clock runs a few hours ahead of
 * ours must still import. Anything starting later than that is refused: DDS would refuse it too.
 */
export const NOT_YET_VALID_TOLERANCE_MS = DAY_MS;

export type XmlParse = { ok: true; doc: Document; root: Element } | { ok: false; problem: string };

/** Parses XML; a DOCTYPE is refused (no entity tricks in uploads), and so is nesting deeper than MAX_XML_DEPTH. */
export function parseXml(text: string): XmlParse {
  if (hasDoctype(text)) return { ok: false, problem: 'must not contain a DOCTYPE' };
  if (tagDepthExceeds(text, MAX_XML_DEPTH)) return { ok: false, problem: `has elements nested more than ${MAX_XML_DEPTH} deep` };
  let doc: Document;
  try {
    doc = new DOMParser({ onError: onErrorStopParsing }).parseFromString(text, 'text/xml');
  } catch (err) {
    const first = err instanceof Error ? (err.message.split('\n')[0] ?? '').replace(/^\[xmldom \w+\]\s*/, '') : String(err);
    return { ok: false, problem: `is not well-formed XML (${first})` };
  }
  if (doc.doctype) return { ok: false, problem: 'must not contain a DOCTYPE' };
  const root = doc.documentElement;
  if (!root) return { ok: false, problem: 'has no root element' };
  if (elementDepth(doc) > MAX_XML_DEPTH) return { ok: false, problem: `has elements nested more than ${MAX_XML_DEPTH} deep` };
  return { ok: true, doc, root };
}

export function childElements(node: Node, localName?: string): Element[] {
  const out: Element[] = [];
  for (let c = node.firstChild; c; c = c.nextSibling) {
    if (c.nodeType !== ELEMENT_NODE) continue;
    const e = c as Element;
    if (localName === undefined || e.localName === localName) out.push(e);
  }
  return out;
}

function child(node: Node, localName: string): Element | undefined {
  return childElements(node, localName)[0];
}

function text(e: Element | undefined): string | undefined {
  return e?.textContent?.trim();
}

/** The domain id of a governance document: the first `<domain_rule>`'s first `<id>` or `<id_range><min>`. */
export function governanceDomainId(xml: string): { domainId?: number; problem?: string } {
  const parsed = parseXml(xml);
  if (!parsed.ok) return { problem: parsed.problem };
  if (parsed.root.localName !== 'dds') return { problem: `has root element <${parsed.root.localName}>, expected <dds>` };
  const rules = child(parsed.root, 'domain_access_rules');
  const rule = rules && child(rules, 'domain_rule');
  const domains = rule && child(rule, 'domains');
  if (!domains) return { problem: 'has no <domain_access_rules><domain_rule><domains>' };
  const first = childElements(domains).find((e) => e.localName === 'id' || e.localName === 'id_range');
  if (!first) return { problem: 'has no <id> or <id_range> in the first <domain_rule><domains>' };
  const raw = first.localName === 'id' ? text(first) : text(child(first, 'min'));
  if (raw === undefined || !/^\d+$/.test(raw)) return { problem: `has an invalid domain id ${JSON.stringify(raw ?? '')}` };
  const domainId = Number(raw);
  const bad = domainIdProblem(domainId);
  if (bad) return { problem: `domain id ${domainId} ${bad}` };
  return { domainId };
}

export interface Grant {
  name: string;
  subjectName?: string;
  notBefore?: string;
  notAfter?: string;
}

/** The grants of a permissions document (`<dds><permissions><grant>`). */
export function permissionsGrants(xml: string): { grants?: Grant[]; problem?: string } {
  const parsed = parseXml(xml);
  if (!parsed.ok) return { problem: parsed.problem };
  if (parsed.root.localName !== 'dds') return { problem: `has root element <${parsed.root.localName}>, expected <dds>` };
  const permissions = child(parsed.root, 'permissions');
  if (!permissions) return { problem: 'has no <permissions> element' };
  const grants = childElements(permissions, 'grant').map((g) => {
    const validity = child(g, 'validity');
    return {
      name: g.getAttribute('name') ?? '',
      subjectName: text(child(g, 'subject_name')),
      notBefore: validity && text(child(validity, 'not_before')),
      notAfter: validity && text(child(validity, 'not_after')),
    };
  });
  if (grants.length === 0) return { problem: 'has no <grant>' };
  return { grants };
}

/**
 * Text as compared between a `.p7s`'s signed content and its `.xml`: line ends as LF, trailing
 * whitespace of every line and of the whole text dropped. A leading S/MIME `Content-Type: text/plain`
 * header (part of the signed bytes in sros2's files) is dropped when `stripMimeHeader` is set.
 */
export function normalizeSignedText(s: string, stripMimeHeader = false): string {
  let t = s.replace(/\r\n?/g, '\n');
  if (t.charCodeAt(0) === 0xfeff) t = t.slice(1);
  if (stripMimeHeader && /^content-type:\s*text\/plain[^\n]*\n\n/i.test(t)) t = t.replace(/^[^\n]*\n\n/, '');
  return t
    .split('\n')
    .map((line) => line.replace(/[ \t]+$/, ''))
    .join('\n')
    .replace(/\s+$/, '');
}

/**
 * A distinguished name as a sorted list of `TYPE=value` (type upper-cased, spaces around `=` and the
 * separators dropped). Accepts `CN=/a/b`, `CN = /a/b`, comma- or newline-separated RDNs (Node's
 * X509Certificate uses newlines). Undefined when it does not look like a DN.
 */
export function dnParts(dn: string): string[] | undefined {
  const parts = dn
    .split(/\n|(?<!\\),/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (parts.length === 0) return undefined;
  const out: string[] = [];
  for (const p of parts) {
    const eq = p.indexOf('=');
    if (eq <= 0) return undefined;
    out.push(`${p.slice(0, eq).trim().toUpperCase()}=${p.slice(eq + 1).trim()}`);
  }
  return out.sort();
}

export function sameDistinguishedName(a: string, b: string): boolean {
  const pa = dnParts(a);
  const pb = dnParts(b);
  return pa !== undefined && pb !== undefined && pa.length === pb.length && pa.every((x, i) => x === pb[i]);
}

/**
 * The import's validity rule, for certificates (CA and enclave) and permission grants: refused when
 * already expired, or when it starts more than NOT_YET_VALID_TOLERANCE_MS (one day) after `now`.
 */
export function validityProblem(notBefore: Date, notAfter: Date, now: Date): string | null {
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) return 'has an unreadable validity period';
  if (notAfter.getTime() <= notBefore.getTime()) return `has an empty validity period (${iso(notBefore)} to ${iso(notAfter)})`;
  if (notAfter.getTime() <= now.getTime()) return `expired on ${iso(notAfter)}`;
  if (notBefore.getTime() > now.getTime() + NOT_YET_VALID_TOLERANCE_MS)
    return `is not valid before ${iso(notBefore)} (more than a day after the server's clock)`;
  return null;
}

/** A DDS permissions date (`YYYY-MM-DDTHH:MM:SS`, UTC when no zone is given, as sros2 writes it). */
export function parseDdsDate(s: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.exec(s);
  if (!m) return undefined;
  const d = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}${m[7] ?? ''}${m[8] ?? 'Z'}`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function iso(d: Date): string {
  return d.toISOString().replace(/\.000Z$/, 'Z');
}

// ---- CRLs ----------------------------------------------------------------------------------------
// sros2 keystores have no CRL; ours may carry one (`public/crl.pem`, the identity CRL). On import it is
// checked so that a revoked enclave certificate can never come back as active (the parsing is pki's).

export { canonicalSerial };

export interface CrlCheck {
  /** Canonical serials (see canonicalSerial) of the revoked certificates. */
  revoked?: Set<string>;
  problem?: string;
}

/** A CRL's revoked serials, or the problem that makes it unusable (unreadable, or not signed by the CA). */
export function checkCrl(crlPem: string, caCertPem: string): CrlCheck {
  try {
    return { revoked: readCrl(crlPem, caCertPem).revokedSerials };
  } catch (err) {
    if (err instanceof PkiError) return { problem: err.message.replace(/^CRL /, '') };
    throw err;
  }
}
