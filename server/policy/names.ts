/**
 * Name checks. Each returns `null` when the name is acceptable, otherwise a short public message saying
 * which rule it breaks (callers prefix it with what the name is for).
 */

/** rcl's limit for a fully qualified namespace, which is what an enclave name is. */
export const MAX_ENCLAVE_NAME_LENGTH = 245;

/**
 * ROS namespace rules, as rcl applies them to `--enclave` / `ROS_SECURITY_ENCLAVE_OVERRIDE`: starts with
 * `/`, no trailing `/` (except `/` itself, the `enclaves` folder), only `[A-Za-z0-9_/]`, no `//`, no
 * segment starting with a digit, at most 245 characters. The name is also a folder path under
 * `enclaves/` on every robot, which is why nothing looser is accepted.
 */
export function enclaveNameProblem(name: string): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'must not be empty';
  if (!name.startsWith('/')) return "must start with '/'";
  if (name === '/') return null;
  if (name.endsWith('/')) return "must not end with '/'";
  const bad = /[^A-Za-z0-9_/]/.exec(name);
  if (bad) return `may contain only letters, digits, '_' and '/' (found ${JSON.stringify(bad[0])})`;
  if (name.includes('//')) return "must not contain '//'";
  const digitFirst = name
    .slice(1)
    .split('/')
    .find((segment) => /^[0-9]/.test(segment));
  if (digitFirst !== undefined) return `segment '${digitFirst}' must not start with a digit`;
  if (name.length > MAX_ENCLAVE_NAME_LENGTH) return `must be at most ${MAX_ENCLAVE_NAME_LENGTH} characters`;
  return null;
}

/** Longest keystore name: a folder name, kept short so `<keystore>/enclaves/<enclave>` stays well under PATH_MAX. */
export const MAX_KEYSTORE_NAME_LENGTH = 64;

/**
 * Keystore names become folder names on robots (and in archives), so they are a single portable path
 * segment: `^[A-Za-z][A-Za-z0-9_.-]{0,63}$`. Starting with a letter rules out `.`, `..`, hidden folders
 * and names an option parser would take for a flag (`-x`); no `/`, `\`, spaces or shell metacharacters.
 */
export function keystoreNameProblem(name: string): string | null {
  if (typeof name !== 'string' || name.length === 0) return 'must not be empty';
  if (name.length > MAX_KEYSTORE_NAME_LENGTH) return `must be at most ${MAX_KEYSTORE_NAME_LENGTH} characters`;
  if (!/^[A-Za-z]/.test(name)) return 'must start with a letter';
  const bad = /[^A-Za-z0-9_.-]/.exec(name);
  if (bad) return `may contain only letters, digits, '_', '.' and '-' (found ${JSON.stringify(bad[0])})`;
  return null;
}

/** Highest DDS domain id ROS 2 accepts (`ROS_DOMAIN_ID`); above it the RTPS port numbers overflow. */
export const MAX_DOMAIN_ID = 232;

/** A DDS domain id as ROS uses it: an integer from 0 to 232. */
export function domainIdProblem(id: number): string | null {
  if (typeof id !== 'number' || !Number.isInteger(id)) return 'must be an integer';
  if (id < 0 || id > MAX_DOMAIN_ID) return `must be between 0 and ${MAX_DOMAIN_ID}`;
  return null;
}
