/**
 * Wire types of the robot side of the HTTP API (CONTRACT.md "Auth" and "For robots"). They describe what the
 * agent relies on; the agent still validates every bundle it receives (`client/agent/bundle.ts`).
 */
import type { RuntimeFileName } from './names.js';

/**
 * An answer that brings a bundle may carry `enclave-report: next-contact`: the server, with a large fleet
 * waiting, asks for the report after this bundle on the agent's next contact (its next poll's answer) rather
 * than at once. The server's side: server/bundles/wire.ts. Node lowercases header names.
 */
export const REPORT_HEADER = 'enclave-report';
export const REPORT_ON_NEXT_CONTACT = 'next-contact';

/** Whether an answer's headers ask for the report on the next contact. */
export function reportOnNextContact(headers: Record<string, unknown>): boolean {
  return headers[REPORT_HEADER] === REPORT_ON_NEXT_CONTACT;
}

export interface ApiErrorBody {
  error: { code: string; message: string };
}

export interface EnrollRequest {
  token: string;
  /** SPKI PEM of the device key (P-256). */
  publicKey: string;
  agentVersion?: string;
}
export interface EnrollResponse {
  robot: { name: string; labels?: Record<string, string> };
}

export interface RobotAuthRequest {
  /** Compact JWT (ES256) signed by the device key. */
  assertion: string;
  /** Ask for the robot's bundle in the answer (a boot then needs one request instead of two). */
  bundle?: boolean;
}
export interface RobotAuthResponse {
  token: string;
  /** ISO 8601. */
  expiresAt: string;
  /** Present when asked for (servers before this field answer the question 422: the agent then asks without it). */
  bundle?: Bundle;
}

/** Claims of the device assertion sent to `POST /v1/auth/robot`. */
export interface RobotAssertionClaims {
  sub: string;
  aud: 'enclave-server';
  iat: number;
  exp: number;
  jti: string;
}

export type Revision = string | number;

/** `shared`: every robot bound to the enclave gets the same key from the server; `per-robot`: see below. */
export type IdentityMode = 'shared' | 'per-robot';

export interface BundleEnclave {
  /** Enclave name, e.g. `/fleet/amr_07/driver`. */
  path: string;
  /** ISO 8601: when the enclave certificate expires (per-robot without a certificate: the CA's expiry). */
  notAfter: string;
  /** Absent: shared (servers before per-robot identities). */
  identity?: IdentityMode;
  /**
   * Per-robot: the serial (lowercase hex, no colons) of this robot's live certificate, present with `cert.pem`.
   * A per-robot enclave never carries `key.pem`: the robot makes its own key and asks for a certificate.
   */
  identitySerial?: string;
  files: Partial<Record<RuntimeFileName, string>>;
}
export interface BundleKeystore {
  name: string;
  enclaves: BundleEnclave[];
}
export interface Bundle {
  revision: Revision;
  robot: unknown;
  keystores: BundleKeystore[];
}

/** `POST /v1/robot/identity`: a PKCS#10 request signed by the key the robot made for that enclave. */
export interface IdentityRequest {
  keystore: string;
  enclave: string;
  /** PEM `CERTIFICATE REQUEST`. */
  csr: string;
}
/** 201 answer of `POST /v1/robot/identity`. */
export interface IdentityResponse {
  keystore: string;
  enclave: string;
  serial: string;
  notAfter: string;
  /** PEM certificate, subject `CN=<enclave path>`. */
  certificate: string;
  /** The robot's bundle revision that carries this certificate. */
  revision: Revision;
  /** Present when robot certificates are short-lived: when to ask for the next one (new key, new request). */
  renewAfter?: string;
}

export interface RobotReport {
  /** The revision held, as a string (whatever JSON type the bundle used). */
  revision: string | null;
  filesystem: string;
  clockSkewMs: number;
  agentVersion: string;
  enclaves: { keystore: string; path: string; notAfter: string }[];
}
