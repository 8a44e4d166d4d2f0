/**
 * The console's only way to the server: same-origin fetches to /v1 with the user's bearer token. The token
 * lives in this module's memory only (no cookie, no localStorage): nothing is sent without our own script
 * adding it, so there is no CSRF surface, and a reload or a closed tab ends the session.
 */
import { patternMatches } from '../../server/acl/acl';
import type { Session } from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let session: Session | null = null;
let expiryTimer: ReturnType<typeof setTimeout> | undefined;
let onEnded: (message: string) => void = () => {};

export const currentSession = (): Session | null => session;

/** Called with a message when the session ends (expired, refused by the server, or signed out). */
export function whenSessionEnds(fn: (message: string) => void): void {
  onEnded = fn;
}

function end(message: string): void {
  session = null;
  clearTimeout(expiryTimer);
  onEnded(message);
}

type Body = { json: unknown } | { raw: string; type: string } | undefined;

async function send(method: string, path: string, body: Body, token: string | undefined): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload: string | undefined;
  if (body && 'json' in body) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body.json);
  } else if (body) {
    headers['Content-Type'] = body.type;
    payload = body.raw;
  }
  return fetch(path, { method, headers, body: payload, cache: 'no-store', credentials: 'omit' });
}

async function errorOf(res: Response): Promise<ApiError> {
  try {
    const j = (await res.json()) as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, j.error?.code ?? 'error', j.error?.message ?? res.statusText);
  } catch {
    return new ApiError(res.status, 'error', `HTTP ${res.status}`);
  }
}

export async function login(username: string, password: string): Promise<Session> {
  const res = await send('POST', '/v1/auth/login', { json: { username, password } }, undefined);
  if (!res.ok) throw await errorOf(res);
  const { token, expiresAt } = (await res.json()) as { token: string; expiresAt: string };
  const who = await send('GET', '/v1/session', undefined, token);
  if (!who.ok) throw await errorOf(who);
  session = { token, expiresAt, ...((await who.json()) as Omit<Session, 'token' | 'expiresAt'>) };
  clearTimeout(expiryTimer);
  // The server answers 401 from then on: say so at that moment rather than at the next click.
  const ms = Date.parse(expiresAt) - Date.now();
  if (ms > 0 && ms < 2 ** 31) expiryTimer = setTimeout(() => end('Your session expired. Sign in again.'), ms);
  return session;
}

export function logout(): void {
  end('You signed out.');
}

async function call<T>(method: string, path: string, body: Body): Promise<T> {
  if (!session) throw new ApiError(401, 'not-signed-in', 'not signed in');
  const res = await send(method, path, body, session.token);
  if (res.status === 401) {
    end('Your session ended (it expired or was changed on the server). Sign in again.');
    throw new ApiError(401, 'session-ended', 'session ended');
  }
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** A /v1 call as the signed-in user. A 401 ends the session (back to the sign-in form, with the reason). */
export const api = <T>(method: string, path: string, json?: unknown): Promise<T> => call<T>(method, path, json === undefined ? undefined : { json });
export const apiRaw = <T>(method: string, path: string, raw: string, type: string): Promise<T> => call<T>(method, path, { raw, type });
export const get = <T>(path: string): Promise<T> => call<T>('GET', path, undefined);

/** What the signed-in user may do to an enclave (admins: everything), decided by the server's own rule. */
export function may(capability: 'read' | 'manage' | 'bind', keystore: string, enclave: string): boolean {
  if (!session) return false;
  if (session.role === 'admin') return true;
  return session.grants.some((g) => g.keystore === keystore && g.capabilities.includes(capability) && patternMatches(g.pattern, enclave));
}

/** `/v1/keystores/{ks}/enclaves/{path}`: the enclave path without its leading slash, each segment escaped. */
export const enclaveUrl = (ks: string, path: string, verb = ''): string =>
  `/v1/keystores/${encodeURIComponent(ks)}/enclaves/${path.replace(/^\//, '').split('/').map(encodeURIComponent).join('/')}${verb ? `/${verb}` : ''}`;
