import { realpathSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { XMLSerializer } from '@xmldom/xmldom';
import type { Document, Element, Node } from '@xmldom/xmldom';
import { PolicyError } from './errors.js';
import { ELEMENT_NODE, XML_NS, childElements, parseXml } from './xml.js';

/**
 * XInclude for sros2 policies, without libxml2: `<xi:include href="REL" xpointer="xpointer(/a/b/*)"/>`
 * (the element children selected by a simple absolute path) or without `xpointer` (the root element),
 * in either XInclude namespace, recursively, each file's hrefs relative to that file.
 *
 * The result matches `xmllint --xinclude` / lxml's `xinclude()` (what sros2 runs), including the
 * `xml:base` attributes libxml2 puts on included elements that come from another folder (policy.xsd
 * allows `xml:base` on profile, topics, services and actions for that reason). Namespace declarations
 * may sit on different elements than libxml2 puts them; that changes no name.
 *
 * Files come from a `readFile(relPath)` callback, so the source can be a folder on disk or the entries
 * of an uploaded archive. Paths handed to it are normalized, `/`-separated and relative to the policy
 * root (the folder of the main file); an href that is absolute, a URL, or climbs out of that root is
 * refused.
 */

export const XINCLUDE_NAMESPACES: readonly string[] = [
  'http://www.w3.org/2001/XInclude',
  'http://www.w3.org/2003/XInclude',
];

/** Returns the file's text, or `undefined` when there is no such file. `relPath` is root-relative. */
export type ReadPolicyFile = (relPath: string) => string | undefined;

export interface XIncludeLimits {
  /** Most elements all includes together may add (an include tree can grow exponentially). Default 100 000. */
  maxElements?: number;
  /** Deepest chain of files including files. Default 32. */
  maxDepth?: number;
  /**
   * Most text all includes together may add, in characters. Default 4 MiB. Counting elements alone lets one
   * element holding a megabyte of text, included a thousand times, expand a 2 KB upload into gigabytes.
   */
  maxChars?: number;
}

export interface XIncludeOptions extends XIncludeLimits {
  /** Root-relative path of the file `doc` was read from: its hrefs are relative to its folder. */
  baseFile: string;
  readFile: ReadPolicyFile;
}

/** Replaces every `xi:include` in `doc` (in place) by what it includes; returns `doc`. */
export function resolveXIncludes(doc: Document, opts: XIncludeOptions): Document {
  const base = normalizeRelPath(opts.baseFile);
  if (base === null) throw new PolicyError(`${opts.baseFile}: not a path inside the policy folder`);
  const ctx = newContext(opts);
  ctx.files.add(base);
  resolveDocument(ctx, doc, base, [base]);
  return doc;
}

/**
 * Reads `mainFile` (root-relative, usually just its name), resolves its includes and returns the
 * resulting XML text plus every file that was read (main file first), e.g. to report unused files.
 */
export function loadPolicy(
  mainFile: string,
  readFile: ReadPolicyFile,
  limits: XIncludeLimits = {},
): { xml: string; files: string[] } {
  const main = normalizeRelPath(mainFile);
  if (main === null) throw new PolicyError(`${mainFile}: not a path inside the policy folder`);
  const ctx = newContext({ ...limits, baseFile: main, readFile });
  const text = readText(ctx, main);
  if (text === undefined) throw new PolicyError(`${main}: file not found`, { file: main });
  const doc = parseXml(text, main);
  ctx.files.add(main);
  resolveDocument(ctx, doc, main, [main]);
  return { xml: new XMLSerializer().serializeToString(doc), files: [...ctx.files] };
}

/**
 * Reads policy files from a folder on disk. Symbolic links are followed only while they stay inside
 * the folder, so a policy cannot pull in other files of the server.
 */
export function fsPolicyReader(rootDir: string): ReadPolicyFile {
  const root = realpathSync(rootDir);
  return (relPath) => {
    let real: string;
    try {
      real = realpathSync(path.resolve(root, relPath));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    if (real !== root && !real.startsWith(root + path.sep)) {
      throw new PolicyError(`${relPath}: is a link that leads outside the policy folder`);
    }
    if (!statSync(real).isFile()) return undefined;
    return readFileSync(real, 'utf8');
  };
}

/** Reads policy files from memory, e.g. the entries of an uploaded archive (keys: paths in the archive). */
export function mapPolicyReader(
  files: ReadonlyMap<string, string | Uint8Array> | Readonly<Record<string, string | Uint8Array>>,
): ReadPolicyFile {
  const byPath = new Map<string, string | Uint8Array>();
  const entries = files instanceof Map ? [...files.entries()] : Object.entries(files);
  for (const [key, value] of entries) {
    const p = normalizeRelPath(key);
    if (p !== null) byPath.set(p, value);
  }
  const decoder = new TextDecoder('utf-8', { fatal: true });
  return (relPath) => {
    const value = byPath.get(relPath);
    if (value === undefined || typeof value === 'string') return value;
    try {
      return decoder.decode(value);
    } catch {
      throw new PolicyError(`${relPath}: is not UTF-8 text`);
    }
  };
}

// ---------------------------------------------------------------------------------------------------

interface Context {
  readonly readFile: ReadPolicyFile;
  readonly maxElements: number;
  readonly maxDepth: number;
  readonly maxChars: number;
  /** Resolved documents by root-relative path: a file included twice is read and resolved once. */
  readonly resolved: Map<string, Document>;
  readonly files: Set<string>;
  elements: number;
  chars: number;
}

function newContext(opts: XIncludeOptions): Context {
  return {
    readFile: opts.readFile,
    maxElements: opts.maxElements ?? 100_000,
    maxDepth: opts.maxDepth ?? 32,
    maxChars: opts.maxChars ?? 4 * 1024 * 1024,
    resolved: new Map(),
    files: new Set(),
    elements: 0,
    chars: 0,
  };
}

function isXInclude(node: Node, localName: string): node is Element {
  return (
    node.nodeType === ELEMENT_NODE &&
    XINCLUDE_NAMESPACES.includes(node.namespaceURI ?? '') &&
    (node as Element).localName === localName
  );
}

/** `xi:include` elements in document order, not descending into includes (their fallbacks are theirs). */
function findIncludes(root: Node): Element[] {
  const out: Element[] = [];
  const walk = (n: Node): void => {
    for (const c of childElements(n)) {
      if (isXInclude(c, 'include')) out.push(c);
      else walk(c);
    }
  };
  walk(root);
  return out;
}

/** `stack`: the chain of files being resolved, `file` last (for cycle detection and messages). */
function resolveDocument(ctx: Context, doc: Document, file: string, stack: readonly string[]): void {
  if (doc.documentElement && isXInclude(doc.documentElement, 'include')) {
    throw new PolicyError(`${file}: the root element cannot be an xi:include`, { file });
  }
  for (const include of findIncludes(doc)) resolveInclude(ctx, doc, include, file, stack);
}

function resolveInclude(ctx: Context, doc: Document, include: Element, file: string, stack: readonly string[]): void {
  const href = include.getAttribute('href') ?? '';
  const where = `${file}: xi:include ${href ? `of ${JSON.stringify(href)}` : ''}`.trimEnd();
  const fail = (why: string): never => {
    throw new PolicyError(`${where}: ${why}`, { file, href });
  };

  const parse = include.getAttribute('parse');
  if (parse !== null && parse !== 'xml') fail(`parse="${parse}" is not supported (only parse="xml")`);
  if (!href) fail('an href is required (references inside the same file are not supported)');
  for (let n: Node | null = include; n && n.nodeType === ELEMENT_NODE; n = n.parentNode) {
    // We resolve hrefs against the including file only; an xml:base written by hand would change that.
    if ((n as Element).hasAttributeNS(XML_NS, 'base')) fail('xml:base on or around an xi:include is not supported');
  }

  const target = resolveHref(href, file, fail);
  if (stack.includes(target)) fail(`include cycle: ${[...stack, target].join(' -> ')}`);
  if (stack.length >= ctx.maxDepth) fail(`includes are nested more than ${ctx.maxDepth} deep`);

  let source = ctx.resolved.get(target);
  if (!source) {
    const text = readText(ctx, target);
    if (text === undefined) {
      const fallback = childElements(include).filter((c) => isXInclude(c, 'fallback'));
      if (fallback.length === 0) fail(`file ${target} not found`);
      if (fallback.length > 1) fail('more than one xi:fallback');
      // XInclude's fallback (used here only for a missing file): its content replaces the include.
      const parent = include.parentNode!;
      for (const inner of findIncludes(fallback[0]!)) resolveInclude(ctx, doc, inner, file, stack);
      while (fallback[0]!.firstChild) parent.insertBefore(fallback[0]!.firstChild, include);
      parent.removeChild(include);
      return;
    }
    source = parseXml(text, target);
    ctx.files.add(target);
    resolveDocument(ctx, source, target, [...stack, target]);
    // A file's resolved form does not depend on who includes it: resolve it once.
    ctx.resolved.set(target, source);
  }

  const xpointer = include.getAttribute('xpointer');
  const selected = xpointer === null ? [source.documentElement!] : selectXPointer(source, xpointer, fail);
  if (selected.length === 0) fail(`xpointer ${JSON.stringify(xpointer)} selects nothing in ${target}`);

  const relBase = relativeUri(target, file);
  const parent = include.parentNode!;
  for (const node of selected) {
    ctx.chars += node.textContent?.length ?? 0;
    if (ctx.chars > ctx.maxChars) fail(`includes add more than ${ctx.maxChars} characters of text`);
    const copy = doc.importNode(node, true) as Element;
    ctx.elements += 1 + copy.getElementsByTagName('*').length;
    if (ctx.elements > ctx.maxElements) fail(`includes add more than ${ctx.maxElements} elements`);
    fixBase(copy, relBase, file);
    parent.insertBefore(copy, include);
  }
  parent.removeChild(include);
}

function readText(ctx: Context, target: string): string | undefined {
  let text: string | undefined;
  try {
    text = ctx.readFile(target);
  } catch (err) {
    if (err instanceof PolicyError) throw err;
    // The reader's own error may name a disk path: keep it as the cause for logs, out of the message.
    throw Object.assign(new PolicyError(`${target}: cannot be read`, { file: target }), { cause: err });
  }
  return text !== undefined && text.startsWith('\uFEFF') ? text.slice(1) : text;
}

/**
 * libxml2's xml:base fix-up for included top-level elements: `relBase` is the included file relative
 * to the including one; when it has no `/` (same folder) nothing changes. Otherwise an element without
 * xml:base gets `relBase`, and one that already has one (from a deeper include) gets it re-expressed
 * relative to the including file.
 */
function fixBase(node: Element, relBase: string, includingFile: string): void {
  if (!relBase.includes('/')) return;
  const own = node.getAttributeNS(XML_NS, 'base');
  const value = own === null || own === '' || resolveUri(own, includingFile) === includingFile ? relBase : resolveUri(own, relBase);
  node.setAttributeNS(XML_NS, 'xml:base', value);
}

// ---------------------------------------------------------------------------------------------------
// XPointer: only the xpointer() scheme with an absolute path of plain names or `*`, e.g.
// xpointer(/policy/enclaves/*) — all that sros2 policies use.

function selectXPointer(doc: Document, xpointer: string, fail: (why: string) => never): Element[] {
  const m = /^\s*xpointer\(\s*((?:\/\s*(?:\*|[A-Za-z_][\w.-]*)\s*)+)\)\s*$/.exec(xpointer);
  if (!m) {
    fail(`xpointer ${JSON.stringify(xpointer)} is not supported (only xpointer(/name/.../*) paths of plain names)`);
  }
  const steps = m![1]!.split('/').map((s) => s.trim()).filter((s) => s !== '');
  let current: Node[] = [doc];
  for (const step of steps) {
    current = current.flatMap((n) =>
      childElements(n).filter((c) => step === '*' || (!c.namespaceURI && c.localName === step)),
    );
  }
  return current as Element[];
}

// ---------------------------------------------------------------------------------------------------
// Paths: root-relative, `/`-separated, normalized.

/** Normalizes a root-relative path; `null` when it is absolute or climbs above the root. */
export function normalizeRelPath(p: string): string | null {
  if (p.startsWith('/') || p.includes('\\') || p.includes('\0')) return null;
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else {
      out.push(seg);
    }
  }
  return out.length === 0 ? null : out.join('/');
}

const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;

function resolveHref(href: string, from: string, fail: (why: string) => never): string {
  if (URI_SCHEME.test(href) || href.startsWith('/') || href.startsWith('\\')) {
    fail('absolute paths and URLs are not allowed; use a path relative to the including file');
  }
  if (href.includes('#')) fail('an href must not have a fragment (use the xpointer attribute)');
  if (href.includes('?')) fail('an href must not have a query');
  if (href.includes('\\')) fail("use '/' in paths, not '\\'");
  let decoded: string;
  try {
    decoded = decodeURIComponent(href);
  } catch {
    return fail('the href is not a valid URI reference');
  }
  const joined = normalizeRelPath([...dirSegments(from), decoded].join('/'));
  if (joined === null || decoded.includes('\0') || decoded.includes('\\')) {
    fail('the path leads outside the policy folder');
  }
  return joined!;
}

function dirSegments(file: string): string[] {
  const segs = file.split('/');
  segs.pop();
  return segs;
}

/** `target` relative to the folder of `from` (both root-relative): libxml2's xmlBuildRelativeURI. */
function relativeUri(target: string, from: string): string {
  const fromDir = dirSegments(from);
  const targetSegs = target.split('/');
  let common = 0;
  while (common < fromDir.length && common < targetSegs.length - 1 && fromDir[common] === targetSegs[common]) common++;
  return [...fromDir.slice(common).map(() => '..'), ...targetSegs.slice(common)].join('/');
}

/** `ref` resolved against `base` (both relative URIs), keeping leading `..`: libxml2's xmlBuildURI. */
function resolveUri(ref: string, base: string): string {
  if (URI_SCHEME.test(ref) || ref.startsWith('/')) return ref;
  const out: string[] = [];
  for (const seg of [...dirSegments(base), ...ref.split('/')]) {
    if (seg === '.' || seg === '') continue;
    if (seg === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(seg);
  }
  return out.join('/');
}
