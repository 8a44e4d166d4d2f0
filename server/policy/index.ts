/**
 * Policies, permissions and governance as sros2 (`ros2 security`) makes them: name rules, XInclude,
 * the policy → permissions.xml transform, the default governance.xml, and XSD validation.
 *
 * Typical flow for an uploaded policy folder:
 *   const { xml } = loadPolicy('my.policy.xml', mapPolicyReader(filesFromArchive));
 *   const problems = await validateXml(xml, 'policy');          // sros2 refuses invalid policies too
 *   const permissions = policyEnclavePaths(xml).map((enclavePath) =>
 *     policyToPermissions(xml, { enclavePath, notBefore, notAfter, domainId, discoveryRule: true }));
 *   await validateXmlBatch(permissions, 'permissions');         // one xmllint run for all of them
 */
export { PolicyError } from './errors.js';
export {
  enclaveNameProblem,
  keystoreNameProblem,
  domainIdProblem,
  MAX_ENCLAVE_NAME_LENGTH,
  MAX_KEYSTORE_NAME_LENGTH,
  MAX_DOMAIN_ID,
} from './names.js';
export {
  resolveXIncludes,
  loadPolicy,
  fsPolicyReader,
  mapPolicyReader,
  XINCLUDE_NAMESPACES,
  type ReadPolicyFile,
  type XIncludeLimits,
  type XIncludeOptions,
} from './xinclude.js';
export {
  policyToPermissions,
  policyToPermissionsAll,
  policyEnclavePaths,
  defaultPermissions,
  formatValidityDate,
  type PermissionsParams,
  type EnclavePermissionsParams,
} from './permissions.js';
export { defaultGovernance } from './governance.js';
export { validateXml, validateXmlBatch, type SchemaName } from './xsd.js';
export { canonicalXml } from './xml.js';
