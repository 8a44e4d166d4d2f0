import { InvalidInput } from '../errors.js';
import { readTarGz } from '../keystores/archive.js';
import { parseXml as parseImportXml } from '../keystores/import-check.js';
import { policyFromArchive, policyFromXml } from '../keystores/policy-input.js';
import { readSros2Keystore, type Sros2ReadResult } from '../keystores/sros2-layout.js';
import { policyEnclavePaths, policyToPermissions } from '../policy/permissions.js';

/**
 * What the sandbox worker can do: every step that reads XML (or an archive of XML) someone sent. Inputs
 * and outputs are plain data (they cross a thread boundary by structured clone); a refusal is thrown as a
 * DomainError and re-thrown as such in the caller's thread.
 */
export interface Tasks {
  policyXml(input: { xml: string }): string;
  policyArchive(input: { archive: Uint8Array; mainFile?: string }): Promise<string>;
  /** Per requested path, its permissions.xml; or the paths the policy has no enclave for. */
  permissions(input: PermissionsInput): { missing: string[] } | { permissions: string[] };
  governance(input: { xml: string }): null;
  keystoreArchive(input: { archive: Uint8Array; limits: ArchiveLimitsInput; now: number }): Promise<Sros2ReadResult>;
}

export interface PermissionsInput {
  policyXml: string;
  paths: string[];
  notBefore: number;
  notAfter: number;
  domainId: number;
}

export interface ArchiveLimitsInput {
  maxUnpackedBytes: number;
  maxEntries: number;
  maxFileBytes: number;
}

export type TaskName = keyof Tasks;

export const tasks: Tasks = {
  policyXml: ({ xml }) => policyFromXml(xml),
  policyArchive: ({ archive, mainFile }) => policyFromArchive(Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength), mainFile),
  permissions: ({ policyXml, paths, notBefore, notAfter, domainId }) => {
    const inPolicy = new Set(policyEnclavePaths(policyXml));
    const missing = paths.filter((p) => !inPolicy.has(p));
    if (missing.length) return { missing };
    const params = { notBefore: new Date(notBefore), notAfter: new Date(notAfter), domainId, discoveryRule: true };
    return { permissions: paths.map((enclavePath) => policyToPermissions(policyXml, { ...params, enclavePath })) };
  },
  governance: ({ xml }) => {
    // The schema check (xmllint) comes after; this refuses what the schema would not see: a DOCTYPE
    // (external entities, entity expansion) and nesting deep enough to hurt a parser.
    const parsed = parseImportXml(xml);
    if (!parsed.ok) throw new InvalidInput(`the governance XML ${parsed.problem}`, undefined, 'invalid-governance');
    return null;
  },
  keystoreArchive: async ({ archive, limits, now }) => {
    const entries = await readTarGz(Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength), limits);
    return readSros2Keystore(entries, new Date(now));
  },
};
