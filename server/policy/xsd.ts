import { memoryPages, validateXML } from 'xmllint-wasm';
import { readAsset, type AssetName } from './assets.js';

/**
 * XSD validation with libxml2 (xmllint compiled to WebAssembly): sros2's own schemas, the validator
 * sros2 uses (through lxml). Each call runs xmllint in a fresh worker thread, about 70 ms, so validate
 * once per change, not per request.
 */

export type SchemaName = 'permissions' | 'governance' | 'policy';

const SCHEMA_FILES: Record<SchemaName, AssetName> = {
  permissions: 'permissions.xsd',
  governance: 'governance.xsd',
  policy: 'policy.xsd',
};

/**
 * policy.xsd imports the XML namespace schema (for `xml:base`) by this URL; xmllint-wasm has no
 * network and no catalog, so xml.xsd is put into its in-memory file system under that very name, which
 * libxml2 then opens as a local file.
 */
const XML_XSD_LOCATION = 'http://www.w3.org/2001/03/xml.xsd';

/** Each validation holds a worker with its own wasm heap (16 MiB and up): bound how many run at once. */
const MAX_CONCURRENT = 2;
let running = 0;
const waiting: Array<() => void> = [];

async function withSlot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/**
 * Validates `xml` against one of sros2's schemas. Resolves to the problems found, each
 * `line N: message` (libxml2's wording, which names the element), or `[]` when the document is valid.
 * A document that is not well-formed is reported the same way. Rejects only when xmllint itself fails.
 */
export async function validateXml(xml: string, schema: SchemaName): Promise<string[]> {
  return (await validateXmlBatch([xml], schema))[0]!;
}

/**
 * `validateXml` for many documents in one xmllint run (one worker start instead of one per document:
 * 50 permissions files take about as long as one). Problems are returned in input order.
 */
export async function validateXmlBatch(xmls: readonly string[], schema: SchemaName): Promise<string[][]> {
  if (xmls.length === 0) return [];
  const preload = schema === 'policy' ? [{ fileName: XML_XSD_LOCATION, contents: readAsset('xml.xsd') }] : [];
  const fileName = (i: number): string => `document-${i}.xml`;
  let output: string;
  try {
    const result = await withSlot(() =>
      validateXML({
        xml: xmls.map((contents, i) => ({ fileName: fileName(i), contents })),
        schema: [{ fileName: SCHEMA_FILES[schema], contents: readAsset(SCHEMA_FILES[schema]) }],
        preload,
        maxMemoryPages: memoryPages.GiB / 4,
      }),
    );
    output = result.rawOutput;
  } catch (err) {
    // Some exit codes (e.g. only parse errors) reject with xmllint's stderr as the message.
    const message = err instanceof Error ? err.message : '';
    if (!/^document-\d+\.xml[: ]/m.test(message)) throw err;
    output = message;
  }

  // xmllint prints, per document, "F:LINE: message" lines (a parse error adds lines quoting the
  // source and a caret, which we skip), then "F validates" or "F fails to validate".
  const problems = xmls.map((): string[] => []);
  const failed = new Set<number>();
  for (const line of output.split('\n')) {
    const located = /^document-(\d+)\.xml:(\d+): (.*)$/.exec(line);
    if (located) {
      const message = located[3]!
        .replace(/^(?:element \S+: )?Schemas validity error : /, '')
        .replace(/^(?:element \S+: )?parser error : /, 'not well-formed: ')
        .trim();
      problems[Number(located[1])]?.push(`line ${located[2]}: ${message}`);
      continue;
    }
    const verdict = /^document-(\d+)\.xml fails to validate$/.exec(line);
    if (verdict) failed.add(Number(verdict[1]));
  }
  for (const i of failed) if (problems[i]!.length === 0) problems[i]!.push('the document is not valid');
  return problems;
}
