import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Files the server ships next to this module (XSD schemas, sros2's default governance, policy and
 * permissions template), copied unchanged from sros2.
 *
 * `tsc` does not copy non-TS files, so there are two layouts to serve:
 * - sources run through tsx: this file is `server/policy/assets.ts`, assets are in `./assets/`;
 * - the build: this file is `dist/server/policy/assets.js`, and the assets stay in the source tree at
 *   `<root>/server/policy/assets/`, i.e. `../../../server/policy/assets/` from here.
 * The first directory that exists wins.
 */
const candidates = [
  new URL('./assets/', import.meta.url),
  new URL('../../../server/policy/assets/', import.meta.url),
];

let assetsDir: URL | undefined;
const cache = new Map<string, string>();

function dir(): URL {
  if (assetsDir) return assetsDir;
  const found = candidates.find((u) => existsSync(fileURLToPath(new URL('policy.xsd', u))));
  if (!found) throw new Error(`policy assets not found (looked in ${candidates.map((u) => fileURLToPath(u)).join(', ')})`);
  assetsDir = found;
  return found;
}

export type AssetName =
  | 'policy.xsd'
  | 'permissions.xsd'
  | 'governance.xsd'
  | 'xml.xsd'
  | 'governance.default.xml'
  | 'default.policy.xml'
  | 'default_permissions_template.xml';

/** The asset's text (UTF-8), read once and cached: they are small and never change while running. */
export function readAsset(name: AssetName): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(new URL(name, dir()), 'utf8');
    cache.set(name, text);
  }
  return text;
}
