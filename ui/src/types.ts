/**
 * Shapes of the /v1 answers the console reads: the server's own types (type-only imports, erased from the
 * bundle), so a change to an answer breaks the console's type check rather than the console.
 */
import type { UserPrincipal } from '../../server/auth/principal';

export type { Labels } from '../../server/acl/acl';
export type { AuditEntry, ChainVerdict } from '../../server/audit/audit.service';
export type { BindingView as Binding } from '../../server/bindings/bindings.service';
export type { FleetRobot, FleetState, FleetSummary as Fleet } from '../../server/console/fleet.service';
export type { StoredGrant as Grant } from '../../server/grants/grants.repo';
export type { EnclaveSummary } from '../../server/keystores/enclaves.service';
export type { KeystoreView as Keystore } from '../../server/keystores/keystores.service';
export type { RobotDetail } from '../../server/robots/robots.service';
export type { PublicUser as User } from '../../server/users/users.service';
import type { EnclaveView } from '../../server/keystores/enclaves.service';

/** Certificate, permissions and policy come only to callers who may read the enclave. */
export type Enclave = Omit<EnclaveView, 'certificate' | 'subject' | 'fingerprintSha256' | 'permissionsXml' | 'policyXml'> &
  Partial<Pick<EnclaveView, 'certificate' | 'subject' | 'fingerprintSha256' | 'permissionsXml' | 'policyXml'>>;

/** The signed-in user: the login's token and `GET /v1/session`. */
export interface Session {
  token: string;
  expiresAt: string;
  name: string;
  role: UserPrincipal['role'];
  /** A member's own grants (empty for an admin). */
  grants: { keystore: string; pattern: string; capabilities: ('read' | 'manage' | 'bind')[] }[];
}
