import { readAsset } from './assets.js';
import { domainIdProblem } from './names.js';

/**
 * The governance.xml `ros2 security create_keystore` writes (shipped as `assets/governance.default.xml`,
 * sros2's file for domain 0) for `domainId`: unauthenticated participants refused, join access control
 * on, discovery and liveliness ENCRYPT, RTPS SIGN, one topic rule `*` with everything protected. The
 * bytes are sros2's, so a keystore made here and one made by sros2 sign the same document.
 */
export function defaultGovernance(domainId: number): string {
  const problem = domainIdProblem(domainId);
  if (problem) throw new RangeError(`domain id ${problem}`);
  const template = readAsset('governance.default.xml');
  const marker = '<id>0</id>';
  if (template.indexOf(marker) === -1 || template.indexOf(marker) !== template.lastIndexOf(marker)) {
    throw new Error('governance.default.xml must contain exactly one <id>0</id>');
  }
  return template.replace(marker, `<id>${domainId}</id>`);
}
