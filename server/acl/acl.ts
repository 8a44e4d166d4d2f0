/**
 * The access decision: a pure function (no I/O) over a closed set of capabilities. Deny by default;
 * an allow names what allowed it (the admin role or one grant's id) so the audit log can say so, and a
 * denial says why so the audit log can say that too.
 */
import { withinEnvelope, type AllowedTopics, type PermissionsEnvelope } from './envelope.js';

/** What a grant can give a member on enclaves whose path matches its pattern. */
export const CAPABILITIES = ['read', 'manage', 'bind'] as const;
export type Capability = (typeof CAPABILITIES)[number];

/**
 * Server-wide actions no grant can give: only the admin role holds them. Routes declare one of these or an
 * enclave capability; nothing else decides access.
 */
export const ADMIN_CAPABILITIES = [
  'user:manage',
  'grant:manage',
  'keystore:create',
  'keystore:import',
  'keystore:export',
  'keystore:governance',
  'keystore:delete',
  'robot:manage',
  'audit:read',
] as const;
export type AdminCapability = (typeof ADMIN_CAPABILITIES)[number];

export type Labels = Record<string, string>;

export interface Grant {
  id: string;
  user: string;
  keystore: string;
  pattern: string;
  capabilities: readonly Capability[];
  /** Limits which robots `bind` may attach to: every label here must match the robot's. */
  robotSelector?: Labels;
  /** Limits what `manage` may sign into permissions (absent: unbounded). */
  permissionsEnvelope?: PermissionsEnvelope;
}

export interface Subject {
  name: string;
  role: 'admin' | 'member';
}

export interface EnclaveAction {
  capability: Capability;
  keystore: string;
  /** Enclave path, e.g. `/fleet/amr_07/driver`. */
  enclave: string;
  /** For `bind`: the labels of each robot the enclave would reach. */
  robots?: readonly Labels[];
  /** For `bind` to a selector: the selector itself must stay inside the grant's robot selector. */
  selector?: Labels;
  /** For `manage` that signs permissions: the topics they allow must stay inside the grant's envelope. */
  permissions?: AllowedTopics;
}

export interface AdminAction {
  capability: AdminCapability;
}

export type Action = EnclaveAction | AdminAction;

export type DenialReason = 'admin-only' | 'no-grant' | 'outside-robot-selector' | 'outside-permissions-envelope';

export type Decision =
  | { allowed: true; by: 'admin' }
  | { allowed: true; by: 'grant'; grantId: string }
  | { allowed: false; reason: DenialReason };

export function isCapability(value: string): value is Capability {
  return (CAPABILITIES as readonly string[]).includes(value);
}

export function isEnclaveAction(action: Action): action is EnclaveAction {
  return isCapability(action.capability);
}

const SEGMENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Patterns: an exact enclave path, `/a/b/*` (exactly one more level) or `/a/b/**` (one or more levels).
 * `/**` alone means every enclave of the keystore. Returns a problem, or null when valid; checked when
 * a grant is written, never when it is read.
 */
export function patternProblem(pattern: string): string | null {
  if (!pattern.startsWith('/')) return 'a pattern starts with "/"';
  const segments = pattern.split('/').slice(1);
  for (const [i, seg] of segments.entries()) {
    const last = i === segments.length - 1;
    if ((seg === '*' || seg === '**') && last) continue;
    if (seg === '*' || seg === '**') return '"*" and "**" may only be the last segment';
    if (!SEGMENT.test(seg)) return `segment "${seg}" is not a valid ROS name segment`;
  }
  return null;
}

export function patternMatches(pattern: string, path: string): boolean {
  if (pattern.endsWith('/**')) {
    const prefix = pattern.slice(0, -2); // keeps the trailing '/': '/a/**' does not match '/ab' nor '/a'
    return path.startsWith(prefix) && path.length > prefix.length;
  }
  if (pattern.endsWith('/*')) {
    const prefix = pattern.slice(0, -1);
    return path.startsWith(prefix) && path.length > prefix.length && !path.slice(prefix.length).includes('/');
  }
  return pattern === path;
}

/** Every label of the selector is present with the same value (an empty selector matches everything). */
export function selectorMatches(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** A binding selector stays inside a grant's selector when it pins every label the grant requires. */
export function selectorWithin(inner: Labels, outer: Labels): boolean {
  return Object.entries(outer).every(([k, v]) => inner[k] === v);
}

/** Why one grant does not allow an enclave action, or null when it does. */
function grantDenial(g: Grant, subject: Subject, action: EnclaveAction): DenialReason | null {
  if (g.user !== subject.name || g.keystore !== action.keystore) return 'no-grant';
  if (!g.capabilities.includes(action.capability)) return 'no-grant';
  if (!patternMatches(g.pattern, action.enclave)) return 'no-grant';
  if (action.capability === 'bind' && g.robotSelector && Object.keys(g.robotSelector).length > 0) {
    const sel = g.robotSelector;
    const robotsOk = (action.robots ?? []).every((labels) => selectorMatches(sel, labels));
    const selectorOk = action.selector === undefined || selectorWithin(action.selector, sel);
    if (!robotsOk || !selectorOk) return 'outside-robot-selector';
  }
  if (action.capability === 'manage' && action.permissions && g.permissionsEnvelope) {
    if (!withinEnvelope(action.permissions, g.permissionsEnvelope)) return 'outside-permissions-envelope';
  }
  return null;
}

// When several grants refuse for different reasons, the most specific reason is the one worth telling.
const REASON_RANK: Record<DenialReason, number> = {
  'admin-only': 0,
  'no-grant': 0,
  'outside-robot-selector': 1,
  'outside-permissions-envelope': 2,
};

export function decide(subject: Subject, grants: readonly Grant[], action: Action): Decision {
  if (subject.role === 'admin') return { allowed: true, by: 'admin' };
  if (!isEnclaveAction(action)) return { allowed: false, reason: 'admin-only' };
  let reason: DenialReason = 'no-grant';
  for (const g of grants) {
    const denial = grantDenial(g, subject, action);
    if (denial === null) return { allowed: true, by: 'grant', grantId: g.id };
    if (REASON_RANK[denial] > REASON_RANK[reason]) reason = denial;
  }
  return { allowed: false, reason };
}

/** The audit log's "allowed by" value for an allowed decision. */
export function allowedBy(d: Decision): string | undefined {
  if (!d.allowed) return undefined;
  return d.by === 'admin' ? 'admin' : `grant:${d.grantId}`;
}
