import { realpathSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { XMLSerializer } from '@xmldom/xmldom';
import type { Document, Element, Node } from '@xmldom/xmldom';
import { PolicyError } from './errors.js';
import { CDATA_SECTION_NODE, COMMENT_NODE, ELEMENT_NODE, TEXT_NODE, XML_NS, childElements, parseXml } from './xml.js';

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
  /**
   * Called for every element as it is placed in the result (its parent already there): may throw to stop
   * the resolution early, e.g. at the first element a policy cannot have.
   */
  checkChild?: (parent: Element, child: Element) => unknown;
}

export interface XIncludeOptions extends XIncludeLimits {
  /** Root-relative path of the file `doc` was read from: its hrefs are relative to its folder. */
  baseFile: string;
  readFile: ReadPolicyFile;
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

/** Replaces every `xi:include` in `doc` by what it includes (the root element is replaced); returns `doc`. */
export function resolveXIncludes(doc: Document, opts: XIncludeOptions): Document {
  const base = normalizeRelPath(opts.baseFile);
  if (base === null) throw new PolicyError(`${opts.baseFile}: not a path inside the policy folder`);
  resolveMain(newContext(opts), doc, base);
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
  const { doc, files } = loadPolicyDocument(mainFile, readFile, limits);
  return { xml: new XMLSerializer().serializeToString(doc), files };
}

/** `loadPolicy`, returning the resolved document itself (to check it before serializing it). */
export function loadPolicyDocument(
  mainFile: string,
  readFile: ReadPolicyFile,
  limits: XIncludeLimits = {},
): { doc: Document; files: string[] } {
  const main = normalizeRelPath(mainFile);
  if (main === null) throw new PolicyError(`${mainFile}: not a path inside the policy folder`);
  const ctx = newContext({ ...limits, baseFile: main, readFile });
  const text = readText(ctx, main);
  if (text === undefined) throw new PolicyError(`${main}: file not found`, { file: main });
  const doc = parseXml(text, main);
  resolveMain(ctx, doc, main);
  return { doc, files: [...ctx.files] };
}

// ---------------------------------------------------------------------------------------------------
// Resolution runs in two passes so that its cost follows the size of the result, never more:
//  1. plan: every file is read, parsed and measured once (elements, characters), and every include is
//     matched to the nodes it selects and to their size. The budget is checked include by include from
//     these sizes, before a single node is copied: a 600-byte include tree that would expand to
//     gigabytes is refused after reading 600 bytes.
//  2. build: the result is copied in document order, each node appended once to its new parent (xmldom
//     re-indexes a parent's children on every insertBefore, which made per-node inserts quadratic).

interface Size {
  elements: number;
  chars: number;
}

/** An xml:base fix-up of an include, as a chain from the outermost include to the innermost. */
interface Bases {
  readonly relBase: string;
  readonly includingFile: string;
  readonly inner: Bases | null;
}

/** A node of some file's resolved tree, not copied yet: `file` resolves includes below it. */
interface Placed {
  readonly node: Node;
  readonly file: string;
  readonly bases: Bases | null;
}

/** What one `xi:include` element stands for: the nodes it selects, or (its file missing) its fallback. */
type IncludePlan =
  | { readonly selected: readonly Placed[]; readonly relBase: string; readonly includingFile: string }
  | { readonly fallback: Element };

interface Context {
  readonly readFile: ReadPolicyFile;
  readonly checkChild?: (parent: Element, child: Element) => unknown;
  readonly maxElements: number;
  readonly maxDepth: number;
  readonly maxChars: number;
  /** Planned documents by root-relative path: a file included twice is read and measured once. */
  readonly docs: Map<string, Document>;
  readonly files: Set<string>;
  readonly includes: Map<Node, IncludePlan>;
  /** Selections by target file and xpointer, with their total size. */
  readonly selections: Map<string, { placed: Placed[]; size: Size }>;
  /** Resolved size of every element of every planned file. */
  readonly sizes: Map<Node, Size>;
  elements: number;
  chars: number;
}

function newContext(opts: XIncludeOptions): Context {
  return {
    readFile: opts.readFile,
    checkChild: opts.checkChild,
    maxElements: opts.maxElements ?? 100_000,
    maxDepth: opts.maxDepth ?? 32,
    maxChars: opts.maxChars ?? 4 * 1024 * 1024,
    docs: new Map(),
    files: new Set(),
    includes: new Map(),
    selections: new Map(),
    sizes: new Map(),
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

function resolveMain(ctx: Context, doc: Document, file: string): void {
  ctx.files.add(file);
  planDocument(ctx, doc, file, [file]);
  const root = doc.documentElement!;
  doc.replaceChild(build(ctx, doc, { node: root, file, bases: null }), root);
}

// ---- pass 1: plan -----------------------------------------------------------------------------------

/** `stack`: the chain of files being planned, `file` last (for cycle detection and messages). */
function planDocument(ctx: Context, doc: Document, file: string, stack: readonly string[]): void {
  if (doc.documentElement && isXInclude(doc.documentElement, 'include')) {
    throw new PolicyError(`${file}: the root element cannot be an xi:include`, { file });
  }
  // Pre-order walk without recursion; an include is planned where it stands (document order decides
  // which file is read first), and only a fallback in use is walked into.
  const order: Element[] = [];
  const todo: Node[] = [doc.documentElement!];
  let own = 0;
  while (todo.length > 0) {
    const n = todo.pop()!;
    if (n.nodeType !== ELEMENT_NODE) continue;
    own++;
    let children: Node = n;
    if (isXInclude(n, 'include')) {
      const plan = planInclude(ctx, n, file, stack);
      if (!('fallback' in plan)) continue;
      children = plan.fallback;
    } else {
      order.push(n as Element);
    }
    const kids: Node[] = [];
    for (let c = children.firstChild; c; c = c.nextSibling) kids.push(c);
    for (let i = kids.length - 1; i >= 0; i--) todo.push(kids[i]!);
  }
  ctx.elements += own;
  if (ctx.elements > ctx.maxElements) {
    throw new PolicyError(`${file}: the policy files hold more than ${ctx.maxElements} elements`, { file });
  }
  // Reverse pre-order: every element's descendants are measured before it.
  for (let i = order.length - 1; i >= 0; i--) {
    const e = order[i]!;
    const size = childrenSize(ctx, e);
    size.elements += 1;
    for (let a = 0; a < e.attributes.length; a++) size.chars += e.attributes.item(a)!.value.length;
    ctx.sizes.set(e, size);
  }
}

function childrenSize(ctx: Context, parent: Node): Size {
  const size = { elements: 0, chars: 0 };
  for (let c = parent.firstChild; c; c = c.nextSibling) {
    let add: Size | undefined;
    if (c.nodeType === TEXT_NODE || c.nodeType === CDATA_SECTION_NODE) add = { elements: 0, chars: c.nodeValue?.length ?? 0 };
    else if (isXInclude(c, 'include')) {
      const plan = ctx.includes.get(c)!;
      add = 'fallback' in plan ? childrenSize(ctx, plan.fallback) : sizeOf(ctx, plan.selected);
    } else if (c.nodeType === ELEMENT_NODE) add = ctx.sizes.get(c);
    if (add) {
      size.elements += add.elements;
      size.chars += add.chars;
    }
  }
  return size;
}

function sizeOf(ctx: Context, placed: readonly Placed[]): Size {
  const size = { elements: 0, chars: 0 };
  for (const p of placed) {
    const s = ctx.sizes.get(p.node)!;
    size.elements += s.elements;
    size.chars += s.chars;
  }
  return size;
}

function planInclude(ctx: Context, include: Element, file: string, stack: readonly string[]): IncludePlan {
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

  let source = ctx.docs.get(target);
  if (!source) {
    const text = readText(ctx, target);
    if (text === undefined) {
      // XInclude's fallback (used here only for a missing file): its content replaces the include.
      const fallback = childElements(include).filter((c) => isXInclude(c, 'fallback'));
      if (fallback.length === 0) fail(`file ${target} not found`);
      if (fallback.length > 1) fail('more than one xi:fallback');
      const plan = { fallback: fallback[0]! };
      ctx.includes.set(include, plan);
      return plan;
    }
    source = parseXml(text, target);
    ctx.files.add(target);
    planDocument(ctx, source, target, [...stack, target]);
    // A file's resolved form does not depend on who includes it: plan it once.
    ctx.docs.set(target, source);
  }

  const xpointer = include.getAttribute('xpointer');
  const key = JSON.stringify([target, xpointer]);
  let selection = ctx.selections.get(key);
  if (!selection) {
    const placed =
      xpointer === null ? [{ node: source.documentElement!, file: target, bases: null }] : selectXPointer(ctx, source, target, xpointer, fail);
    if (placed.length === 0) fail(`xpointer ${JSON.stringify(xpointer)} selects nothing in ${target}`);
    selection = { placed, size: sizeOf(ctx, placed) };
    ctx.selections.set(key, selection);
  }
  ctx.elements += selection.size.elements;
  if (ctx.elements > ctx.maxElements) fail(`the policy with its includes would hold more than ${ctx.maxElements} elements`);
  ctx.chars += selection.size.chars;
  if (ctx.chars > ctx.maxChars) fail(`includes add more than ${ctx.maxChars} characters of text and attributes`);
  const plan = { selected: selection.placed, relBase: relativeUri(target, file), includingFile: file };
  ctx.includes.set(include, plan);
  return plan;
}

/** The children of `node` in its file's resolved tree: includes replaced by what they select. */
function resolvedChildren(ctx: Context, node: Node, file: string, out: Placed[] = []): Placed[] {
  for (let c = node.firstChild; c; c = c.nextSibling) {
    const plan = isXInclude(c, 'include') ? ctx.includes.get(c) : undefined;
    if (!plan) {
      out.push({ node: c, file, bases: null });
    } else if ('fallback' in plan) {
      resolvedChildren(ctx, plan.fallback, file, out);
    } else {
      for (const s of plan.selected) {
        out.push({ node: s.node, file: s.file, bases: { relBase: plan.relBase, includingFile: plan.includingFile, inner: s.bases } });
      }
    }
  }
  return out;
}

// ---- pass 2: build ----------------------------------------------------------------------------------

function build(ctx: Context, doc: Document, top: Placed): Element {
  const root = copyOf(doc, top) as Element;
  const stack: Array<{ out: Node; children: Placed[]; next: number }> = [
    { out: root, children: resolvedChildren(ctx, top.node, top.file), next: 0 },
  ];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    const p = frame.children[frame.next++];
    if (!p) {
      stack.pop();
      continue;
    }
    const copy = copyOf(doc, p);
    frame.out.appendChild(copy);
    if (ctx.checkChild && copy.nodeType === ELEMENT_NODE) ctx.checkChild(frame.out as Element, copy as Element);
    if (p.node.nodeType === ELEMENT_NODE && p.node.firstChild) {
      stack.push({ out: copy, children: resolvedChildren(ctx, p.node, p.file), next: 0 });
    }
  }
  return root;
}

/** A shallow copy (with attributes) of `p`, its xml:base fixed up for the includes it came through. */
function copyOf(doc: Document, p: Placed): Node {
  const copy = shallowCopy(doc, p.node);
  if (p.bases && copy.nodeType === ELEMENT_NODE) {
    const chain: Bases[] = [];
    for (let b: Bases | null = p.bases; b; b = b.inner) chain.push(b);
    const el = copy as Element;
    let base = el.getAttributeNS(XML_NS, 'base');
    let changed = false;
    // Innermost include first, as libxml2 fixes each level up when it copies it into the next.
    for (let i = chain.length - 1; i >= 0; i--) {
      const { relBase, includingFile } = chain[i]!;
      if (!relBase.includes('/')) continue;
      base = fixBase(base, relBase, includingFile);
      changed = true;
    }
    if (changed) el.setAttributeNS(XML_NS, 'xml:base', base!);
  }
  return copy;
}

/**
 * `doc.importNode(node, false)`, made by hand: xmldom's clone copies every enumerable property of the
 * node (a for-in over its whole prototype chain), twenty times slower than creating the node.
 */
function shallowCopy(doc: Document, node: Node): Node {
  switch (node.nodeType) {
    case ELEMENT_NODE: {
      const e = node as Element;
      const copy = doc.createElementNS(e.namespaceURI, e.tagName);
      for (let i = 0; i < e.attributes.length; i++) {
        const a = e.attributes.item(i)!;
        copy.setAttributeNS(a.namespaceURI, a.name, a.value);
      }
      return copy;
    }
    case TEXT_NODE:
      return doc.createTextNode(node.nodeValue ?? '');
    case CDATA_SECTION_NODE:
      return doc.createCDATASection(node.nodeValue ?? '');
    case COMMENT_NODE:
      return doc.createComment(node.nodeValue ?? '');
    default:
      return doc.importNode(node, false);
  }
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
 * libxml2's xml:base fix-up for included top-level elements: `relBase` (which has a `/`: the file is in
 * another folder) is the included file relative to the including one. An element without xml:base gets
 * `relBase`, and one that already has one (from a deeper include) gets it re-expressed relative to the
 * including file.
 */
function fixBase(own: string | null, relBase: string, includingFile: string): string {
  return own === null || own === '' || resolveUri(own, includingFile) === includingFile ? relBase : resolveUri(own, relBase);
}

// ---------------------------------------------------------------------------------------------------
// XPointer: only the xpointer() scheme with an absolute path of plain names or `*`, e.g.
// xpointer(/policy/enclaves/*) — all that sros2 policies use. Evaluated on the resolved tree.

function selectXPointer(ctx: Context, doc: Document, file: string, xpointer: string, fail: (why: string) => never): Placed[] {
  const m = /^\s*xpointer\(\s*((?:\/\s*(?:\*|[A-Za-z_][\w.-]*)\s*)+)\)\s*$/.exec(xpointer);
  if (!m) {
    fail(`xpointer ${JSON.stringify(xpointer)} is not supported (only xpointer(/name/.../*) paths of plain names)`);
  }
  const steps = m![1]!.split('/').map((s) => s.trim()).filter((s) => s !== '');
  let current: Placed[] = [{ node: doc, file, bases: null }];
  for (const step of steps) {
    current = current.flatMap((p) =>
      resolvedChildren(ctx, p.node, p.file).flatMap((c) => {
        if (c.node.nodeType !== ELEMENT_NODE) return [];
        const e = c.node as Element;
        return step === '*' || (!e.namespaceURI && e.localName === step) ? [c] : [];
      }),
    );
  }
  return current;
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
