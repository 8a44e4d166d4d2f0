/**
 * A keystore's material as sros2 lays it out, independent of storage: what import produces and export
 * consumes. PEM and XML as text; private keys in clear only while in memory (stored sealed).
 */
export interface EnclaveMaterial {
  /** Enclave name, e.g. `/talker_listener/talker`. */
  path: string;
  certPem: string;
  keyPem: string;
  permissionsXml: string;
  permissionsP7s: string;
}

/**
 * A per-robot enclave: its signed permissions, and no key or certificate (each robot holds its own, made on the
 * robot: there is nothing to export). Written as an enclave folder without cert.pem and key.pem.
 */
export interface PerRobotEnclaveMaterial {
  path: string;
  permissionsXml: string;
  permissionsP7s: string;
  /** Read from the permissions' `<validity>` on import (the window robots' certificates get). */
  notBefore?: Date;
  notAfter?: Date;
}

export interface KeystoreMaterial {
  identityCaCertPem: string;
  /** Absent for an import without private keys ("import-only": serves enclaves, cannot issue). */
  identityCaKeyPem?: string;
  permissionsCaCertPem: string;
  permissionsCaKeyPem?: string;
  /** One CA fills both roles (sros2's default): exported as `ca.*.pem` with the role names as symlinks. */
  sharedCa: boolean;
  governanceXml: string;
  governanceP7s: string;
  /** DDS domain id read from governance (the first domain rule's first id). */
  domainId: number;
  enclaves: EnclaveMaterial[];
  perRobotEnclaves?: PerRobotEnclaveMaterial[];
}
