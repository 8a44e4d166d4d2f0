/**
 * Turns `--policy FILE` into what the API takes. A plain policy XML goes as text. One that uses
 * `xi:include` (every stock sros2 policy does: `common/node.xml`) cannot be resolved by the server from
 * the text alone, so the main file and every file it includes, transitively, are packed into a
 * `.tar.gz` rooted at the main file's folder, and sent with the main file's name. A `.tar.gz` given
 * directly is sent as is.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isGzip, looksLikeTarGz, packTarGz } from './archive.js';
import { UsageError } from './errors.js';

export type PolicyInput = { kind: 'xml'; xml: string } | { kind: 'archive'; archive: Buffer; file?: string; files: string[] };

const XINCLUDE_NS = /www\.w3\.org\/200[13]\/XInclude/;
/** `<xi:include ...>` with any prefix; the attributes are picked apart below. */
const INCLUDE_TAG = /<(?:[A-Za-z_][\w.-]*:)?include\b([^>]*)>/g;
const HREF = /\bhref\s*=\s*(?:"([^"]*)"|'([^']*)')/;

export const usesXInclude = (xml: string): boolean => XINCLUDE_NS.test(xml);

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read policy ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}

/**
 * The files `main` pulls in, relative to `root`, in discovery order. Only relative hrefs inside `root`
 * can work: the server resolves includes inside the archive and nowhere else, so anything else is
 * refused here with the file and href named.
 */
export function includeClosure(root: string, main: string): string[] {
  const found: string[] = [];
  const seen = new Set<string>([main]);
  const queue = [main];
  while (queue.length > 0) {
    const rel = queue.shift()!;
    const xml = readText(path.join(root, rel));
    for (const m of xml.matchAll(INCLUDE_TAG)) {
      const attrs = m[1] ?? '';
      const h = HREF.exec(attrs);
      const href = h ? (h[1] ?? h[2] ?? '') : '';
      // No href: an include of the same document (xpointer only); nothing to pack.
      if (href === '') continue;
      if (/^[a-z][a-z0-9+.-]*:/i.test(href) || path.isAbsolute(href)) {
        throw new UsageError(`policy ${rel}: include "${href}" must be a relative path (the server resolves includes only inside the policy folder)`);
      }
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(rel), href));
      if (target.startsWith('../') || target === '..') {
        throw new UsageError(`policy ${rel}: include "${href}" leaves the policy's folder ${root} (the server resolves includes only inside it)`);
      }
      if (seen.has(target)) continue;
      seen.add(target);
      if (!fs.existsSync(path.join(root, target))) throw new UsageError(`policy ${rel}: included file ${target} not found in ${root}`);
      found.push(target);
      queue.push(target);
    }
  }
  return found;
}

export async function readPolicy(file: string, mainInArchive?: string): Promise<PolicyInput> {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read policy ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder (pack it as .tar.gz, or give the main .policy.xml file)' : (err as Error).message}`);
  }
  if (isGzip(data)) return { kind: 'archive', archive: data, file: mainInArchive, files: [] };
  if (looksLikeTarGz(file)) throw new UsageError(`policy ${file} is named .tar.gz but is not gzip data`);
  const xml = data.toString('utf8');
  if (!usesXInclude(xml)) return { kind: 'xml', xml };
  const root = path.dirname(path.resolve(file));
  const main = path.basename(file);
  const files = [main, ...includeClosure(root, main)];
  return { kind: 'archive', archive: await packTarGz(root, files), file: main, files };
}

/** The policy fields of an enclave-create (or batch) body. */
export function policyFields(p: PolicyInput | undefined): Record<string, string> {
  if (!p) return {};
  if (p.kind === 'xml') return { policy: p.xml };
  return p.file ? { policyArchive: p.archive.toString('base64'), policyFile: p.file } : { policyArchive: p.archive.toString('base64') };
}
