import { DOMParser, onErrorStopParsing, ParseError } from '@xmldom/xmldom';
import type { Document, Element, Node } from '@xmldom/xmldom';
import { PolicyError } from './errors.js';

export const XML_NS = 'http://www.w3.org/XML/1998/namespace';
const XMLNS_NS = 'http://www.w3.org/2000/xmlns/';

export const ELEMENT_NODE = 1;
export const TEXT_NODE = 3;
export const CDATA_SECTION_NODE = 4;
export const COMMENT_NODE = 8;

/**
 * Parses one XML file of a policy. `what` names it in the error (a policy-relative path, never a disk
 * path). A DOCTYPE is refused: policies never need one, and it is the door to entity tricks in uploads.
 */
export function parseXml(text: string, what: string): Document {
  if (hasDoctype(text)) throw new PolicyError(`${what}: a DOCTYPE is not allowed in a policy`, { file: what });
  if (tagDepthExceeds(text, MAX_XML_DEPTH)) {
    throw new PolicyError(`${what}: elements are nested more than ${MAX_XML_DEPTH} deep`, { file: what });
  }
  let doc: Document;
  try {
    doc = new DOMParser({ onError: onErrorStopParsing }).parseFromString(text, 'text/xml');
  } catch (err) {
    throw new PolicyError(`${what}: not well-formed XML: ${describeParseError(err)}`, { file: what });
  }
  if (doc.doctype) throw new PolicyError(`${what}: a DOCTYPE is not allowed in a policy`, { file: what });
  if (!doc.documentElement) throw new PolicyError(`${what}: no root element`, { file: what });
  if (elementDepth(doc) > MAX_XML_DEPTH) {
    throw new PolicyError(`${what}: elements are nested more than ${MAX_XML_DEPTH} deep`, { file: what });
  }
  return doc;
}

/**
 * Deepest element nesting a policy, governance or permissions file may have. libxml2 (the XSD validator,
 * and sros2's lxml) refuses deeper documents itself; refusing them right after parsing also keeps every
 * recursive walk over a document far from the call stack's limit.
 */
export const MAX_XML_DEPTH = 256;

/** How deep elements are nested (the root alone: 1), walked without recursion. */
export function elementDepth(root: Node): number {
  let max = 0;
  let depth = 0;
  let n: Node | null = root.firstChild;
  while (n) {
    if (n.nodeType === ELEMENT_NODE) {
      depth++;
      if (depth > max) max = depth;
      if (n.firstChild) {
        n = n.firstChild;
        continue;
      }
      depth--;
    }
    // Next node in document order that is not inside `n`: climb while there is no next sibling.
    while (n && !n.nextSibling) {
      n = n.parentNode;
      if (!n || n === root) return max;
      depth--;
    }
    n = n ? n.nextSibling : null;
  }
  return max;
}

/**
 * Whether start tags nest deeper than `max`, read from the text in one pass before any parsing. xmldom's
 * cost grows faster than linearly with nesting (20 000 levels take 0.2 s on a quiet machine and over the
 * sandbox's 1.5 s limit on a busy one), so a deep document is refused for its depth, at once, instead of
 * for the time it took. On well-formed text this counts exactly what `elementDepth` counts after parsing.
 */
export function tagDepthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let i = text.indexOf('<');
  while (i !== -1) {
    const next = text.charCodeAt(i + 1);
    let end: number;
    if (text.startsWith('<!--', i)) end = indexAfter(text, '-->', i + 4);
    else if (text.startsWith('<![CDATA[', i)) end = indexAfter(text, ']]>', i + 9);
    else if (next === 0x3f /* ? */) end = indexAfter(text, '?>', i + 2);
    else if (next === 0x21 /* ! */) end = indexAfter(text, '>', i + 2);
    else if (next === 0x2f /* / */) {
      depth--;
      end = indexAfter(text, '>', i + 2);
    } else {
      // A start tag: its end is the first '>' outside a quoted attribute value.
      let j = i + 1;
      let quote = 0;
      for (; j < text.length; j++) {
        const c = text.charCodeAt(j);
        if (quote) {
          if (c === quote) quote = 0;
        } else if (c === 0x22 || c === 0x27) quote = c;
        else if (c === 0x3e /* > */) break;
      }
      if (j >= text.length) return false;
      // A self-closing element counts as one level as deep as an open one, without staying open.
      const selfClosing = text.charCodeAt(j - 1) === 0x2f;
      if (depth + 1 > max) return true;
      if (!selfClosing) depth++;
      end = j + 1;
    }
    if (end === -1) return false;
    i = text.indexOf('<', end);
  }
  return false;
}

function indexAfter(text: string, token: string, from: number): number {
  const at = text.indexOf(token, from);
  return at === -1 ? -1 : at + token.length;
}

/**
 * A DOCTYPE in the prolog, found before parsing: xmldom stops at the first entity it cannot expand and
 * would report "entity not found" instead of naming the DOCTYPE that defines it.
 */
export function hasDoctype(text: string): boolean {
  return /^\uFEFF?(?:\s|<\?[\s\S]*?\?>|<!--[\s\S]*?-->)*<!DOCTYPE/i.test(text);
}

function describeParseError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // xmldom appends its own locator text after a newline; keep the message and our own line number.
  const first = err.message.split('\n')[0]?.replace(/^\[xmldom \w+\]\s*/, '') ?? 'parse error';
  const line: unknown = err instanceof ParseError ? (err.locator as { lineNumber?: unknown } | undefined)?.lineNumber : undefined;
  return typeof line === 'number' ? `line ${line}: ${first}` : first;
}

/** Element children of `node`, in document order. */
export function childElements(node: Node): Element[] {
  const out: Element[] = [];
  for (let c = node.firstChild; c; c = c.nextSibling) if (c.nodeType === ELEMENT_NODE) out.push(c as Element);
  return out;
}

/** True for an element with no namespace and this local name (every policy element is like that). */
export function isPlain(node: Node, localName: string): boolean {
  return node.nodeType === ELEMENT_NODE && !node.namespaceURI && (node as Element).localName === localName;
}

/** True for namespace declarations, which xmldom lists among the attributes but XPath does not. */
export function isNamespaceDeclaration(name: string, namespaceURI: string | null): boolean {
  return namespaceURI === XMLNS_NS || name === 'xmlns' || name.startsWith('xmlns:');
}

// ---------------------------------------------------------------------------------------------------
// Writing: a tiny tree and a pretty printer shaped like lxml's `pretty_print=True` (what sros2 writes).

export interface XmlElement {
  readonly name: string;
  readonly attrs?: ReadonlyArray<readonly [string, string]>;
  readonly children?: readonly XmlElement[];
  readonly text?: string;
}

export function el(name: string, children: readonly XmlElement[] = [], attrs: ReadonlyArray<readonly [string, string]> = []): XmlElement {
  return { name, children, attrs };
}

export function textEl(name: string, text: string): XmlElement {
  return { name, text };
}

// Characters XML 1.0 cannot carry at all, even escaped.
const NOT_XML_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;

function checkChars(value: string): string {
  if (NOT_XML_CHAR.test(value)) throw new TypeError(`value cannot be written as XML: ${JSON.stringify(value)}`);
  return value;
}

function escapeText(value: string): string {
  return checkChars(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
}

function escapeAttr(value: string): string {
  return checkChars(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/"/g, '&quot;')
    .replace(/\t/g, '&#9;')
    .replace(/\n/g, '&#10;')
    .replace(/\r/g, '&#13;');
}

/** 2-space indent, LF newlines, final newline, no XML declaration (like sros2's permissions.xml). */
export function serializePretty(root: XmlElement): string {
  const lines: string[] = [];
  const write = (e: XmlElement, depth: number): void => {
    const pad = '  '.repeat(depth);
    const open = `<${e.name}${(e.attrs ?? []).map(([k, v]) => ` ${k}="${escapeAttr(v)}"`).join('')}`;
    if (e.children && e.children.length > 0) {
      lines.push(`${pad}${open}>`);
      for (const c of e.children) write(c, depth + 1);
      lines.push(`${pad}</${e.name}>`);
    } else if (e.text) {
      lines.push(`${pad}${open}>${escapeText(e.text)}</${e.name}>`);
    } else {
      lines.push(`${pad}${open}/>`);
    }
  };
  write(root, 0);
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------
// Comparing: a canonical text form for "are these the same XML?".

/**
 * A canonical, line-per-node text form of an XML document for equality checks: element order, expanded
 * element and attribute names, attribute values (attributes sorted) and trimmed text are kept;
 * whitespace-only text, comments, processing instructions, the XML declaration, namespace prefixes and
 * where namespaces are declared are ignored. Two documents are "XML-equal" when their forms are equal;
 * the form is meant for diffs, not for parsing back.
 */
export function canonicalXml(xml: string): string {
  const doc = parseXml(xml, 'document');
  const lines: string[] = [];
  const nameOf = (ns: string | null, local: string): string => (ns ? `{${ns}}${local}` : local);
  const walk = (e: Element, depth: number): void => {
    const pad = '  '.repeat(depth);
    const attrs: string[] = [];
    for (let i = 0; i < e.attributes.length; i++) {
      const a = e.attributes.item(i);
      if (!a || isNamespaceDeclaration(a.name, a.namespaceURI)) continue;
      attrs.push(`${nameOf(a.namespaceURI, a.localName ?? a.name)}=${JSON.stringify(a.value)}`);
    }
    attrs.sort();
    lines.push(`${pad}<${nameOf(e.namespaceURI, e.localName ?? e.nodeName)}${attrs.map((a) => ` ${a}`).join('')}>`);
    let text = '';
    const flush = (): void => {
      const t = text.trim();
      if (t) lines.push(`${pad}  ${JSON.stringify(t)}`);
      text = '';
    };
    for (let c = e.firstChild; c; c = c.nextSibling) {
      if (c.nodeType === TEXT_NODE || c.nodeType === CDATA_SECTION_NODE) {
        text += c.nodeValue ?? '';
      } else if (c.nodeType === ELEMENT_NODE) {
        flush();
        walk(c as Element, depth + 1);
      }
    }
    flush();
  };
  walk(doc.documentElement!, 0);
  return lines.join('\n') + '\n';
}
