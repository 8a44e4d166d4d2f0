import { XMLSerializer } from '@xmldom/xmldom';
import { InvalidInput } from '../errors.js';
import { parseXml } from '../policy/xml.js';
import { checkPolicyChild, checkPolicyShape } from '../policy/shape.js';
import { loadPolicyDocument, mapPolicyReader, XINCLUDE_NAMESPACES } from '../policy/xinclude.js';
import { readTarGz, resolveEntry } from './archive.js';

export const POLICY_ARCHIVE_LIMITS = { maxUnpackedBytes: 8 * 1024 * 1024, maxEntries: 2_000, maxFileBytes: 1024 * 1024 };

/**
 * A policy sent as plain XML. An `xi:include` element in it cannot be resolved (its files are not here),
 * so it is refused with the way out rather than silently dropped. A flattened policy (`xmllint
 * --xinclude` output) still declares the XInclude namespace and carries `xml:base` attributes but has no
 * such element: it is accepted.
 */
export function policyFromXml(xml: string): string {
  const doc = parseXml(xml.startsWith('\uFEFF') ? xml.slice(1) : xml, 'policy.xml');
  if (XINCLUDE_NAMESPACES.some((ns) => doc.getElementsByTagNameNS(ns, 'include').length > 0)) {
    throw new InvalidInput(
      'the policy uses xi:include: send the policy folder as a .tar.gz (Content-Type: application/gzip) so its includes can be resolved',
      undefined,
      'invalid-policy',
    );
  }
  checkPolicyShape(doc);
  return new XMLSerializer().serializeToString(doc);
}

/**
 * A policy folder sent as a .tar.gz: the main file is `mainFile` when given, otherwise the one
 * `*.policy.xml` in the archive; its includes are resolved against the archive's own files only.
 */
export async function policyFromArchive(archive: Buffer, mainFile?: string): Promise<string> {
  const entries = await readTarGz(archive, POLICY_ARCHIVE_LIMITS);
  // Symlinked files (folders copied around often have them) read as their target inside the archive.
  const files = new Map<string, Buffer>();
  for (const [name, entry] of entries) {
    if (entry.type === 'directory') continue;
    const content = resolveEntry(entries, name);
    if (content) files.set(name, content);
  }
  let main = mainFile;
  if (!main) {
    const candidates = [...files.keys()].filter((n) => n.endsWith('.policy.xml'));
    if (candidates.length !== 1) {
      throw new InvalidInput(
        candidates.length === 0
          ? 'the archive holds no *.policy.xml file'
          : `the archive holds several policies (${candidates.slice(0, 5).join(', ')}): say which one with policyFile`,
        undefined,
        'invalid-policy',
      );
    }
    main = candidates[0]!;
  }
  // Includes are relative to the main file's folder: rebase the archive there.
  const dir = main.includes('/') ? main.slice(0, main.lastIndexOf('/') + 1) : '';
  const rebased = new Map<string, Buffer>();
  for (const [name, content] of files) if (name.startsWith(dir)) rebased.set(name.slice(dir.length), content);
  const { doc } = loadPolicyDocument(main.slice(dir.length), mapPolicyReader(rebased), { checkChild: checkPolicyChild });
  checkPolicyShape(doc);
  return new XMLSerializer().serializeToString(doc);
}
