/**
 * Name rules shared by the robot agent and the admin CLI. The agent uses them to decide whether a name the
 * server sent may become part of a path on the robot, so they are strict on purpose.
 */

/** ROS namespace rules for enclave names (see ROS2-SECURITY.md), without the `/` root enclave. */
const ENCLAVE_PATH = /^\/([A-Za-z_][A-Za-z0-9_]*)(\/[A-Za-z_][A-Za-z0-9_]*)*$/;
const ENCLAVE_PATH_MAX = 245;

/** A keystore name becomes one folder name: no separators, no leading dot (hidden names are the agent's). */
const KEYSTORE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;

export function isEnclavePath(value: unknown): value is string {
  return typeof value === 'string' && value.length <= ENCLAVE_PATH_MAX && ENCLAVE_PATH.test(value);
}

export function isKeystoreName(value: unknown): value is string {
  return typeof value === 'string' && KEYSTORE_NAME.test(value) && !value.includes('..');
}

/** The files a ROS 2 process reads from an enclave folder; nothing else is ever written on a robot. */
export const REQUIRED_RUNTIME_FILES = [
  'identity_ca.cert.pem',
  'cert.pem',
  'key.pem',
  'permissions_ca.cert.pem',
  'governance.p7s',
  'permissions.p7s',
] as const;
export const OPTIONAL_RUNTIME_FILES = ['crl.pem'] as const;
export type RuntimeFileName =
  | (typeof REQUIRED_RUNTIME_FILES)[number]
  | (typeof OPTIONAL_RUNTIME_FILES)[number];

const RUNTIME_FILE_SET: ReadonlySet<string> = new Set([...REQUIRED_RUNTIME_FILES, ...OPTIONAL_RUNTIME_FILES]);

export function isRuntimeFileName(value: string): value is RuntimeFileName {
  return RUNTIME_FILE_SET.has(value);
}
