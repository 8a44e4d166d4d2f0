/**
 * Wire types of the robot side of the HTTP API (CONTRACT.md "Auth" and "For robots"). They describe what the
 * agent relies on; the agent still validates every bundle it receives (`client/agent/bundle.ts`).
 */
import type { RuntimeFileName } from './names.js';

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
}
export interface RobotAuthResponse {
  token: string;
  /** ISO 8601. */
  expiresAt: string;
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

export interface BundleEnclave {
  /** Enclave name, e.g. `/fleet/amr_07/driver`. */
  path: string;
  /** ISO 8601: when the enclave certificate expires. */
  notAfter: string;
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

export interface RobotReport {
  /** The revision held, as a string (whatever JSON type the bundle used). */
  revision: string | null;
  filesystem: string;
  clockSkewMs: number;
  agentVersion: string;
  enclaves: { keystore: string; path: string; notAfter: string }[];
}
