/**
 * The administrator's side, through the same API client `enclavectl` uses (`client/ctl/api.ts`): a
 * keystore, two enclaves bound to every robot by a label selector, a third enclave kept for a change that
 * touches one robot, and the robots with their one-time enrollment tokens.
 */
import { Api, enclaveUrl } from '../../client/ctl/api.js';

export const KEYSTORE = 'fleet';
export const LABELS = { fleet: 'bench' };
/** Bound to every robot through the selector; the first is the one rotated. */
export const SHARED_ENCLAVES = ['/fleet/common/driver', '/fleet/common/planner'];
/** Bound to one robot only, in the "one robot" phase. */
export const SOLO_ENCLAVE = '/fleet/solo/camera';

const CONCURRENCY = 4;

export class FleetAdmin {
  private constructor(readonly api: Api) {}

  static async login(url: string, caPem: string, user: string, password: string): Promise<FleetAdmin> {
    const anon = new Api(url, caPem);
    try {
      const { token } = await anon.call<{ token: string }>('POST', 'v1/auth/login', { json: { username: user, password } });
      return new FleetAdmin(new Api(url, caPem, token));
    } finally {
      anon.close();
    }
  }

  close(): void {
    this.api.close();
  }

  async setUp(): Promise<void> {
    await this.api.call('POST', 'v1/keystores', { json: { name: KEYSTORE } });
    await this.api.call('POST', `v1/keystores/${KEYSTORE}/enclaves:batch`, { json: { paths: [...SHARED_ENCLAVES, SOLO_ENCLAVE] } });
    for (const enclave of SHARED_ENCLAVES) await this.api.call('POST', 'v1/bindings', { json: { keystore: KEYSTORE, enclave, selector: LABELS } });
  }

  /** Creates the robots (labelled for the selector) and one enrollment token each. */
  async createRobots(names: string[], onProgress: (done: number) => void): Promise<string[]> {
    const tokens: string[] = new Array<string>(names.length);
    let next = 0;
    let done = 0;
    const lane = async (): Promise<void> => {
      while (next < names.length) {
        const i = next++;
        await this.api.call('POST', 'v1/robots', { json: { name: names[i], labels: LABELS } });
        tokens[i] = (await this.api.call<{ token: string }>('POST', `v1/robots/${names[i]}/enrollment-tokens`, { json: {} })).token;
        if (++done % 250 === 0) onProgress(250);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, lane));
    if (done % 250) onProgress(done % 250);
    return tokens;
  }

  rotate(enclave: string): Promise<unknown> {
    return this.api.call('POST', `${enclaveUrl(KEYSTORE, enclave)}/rotate`, { json: {} });
  }

  /** `PATCH` an enclave's identity mode (per-robot: the shared key goes; shared: a new shared key). */
  setIdentityMode(enclave: string, identityMode: 'shared' | 'per-robot'): Promise<unknown> {
    return this.api.call('PATCH', enclaveUrl(KEYSTORE, enclave), { json: { identityMode } });
  }

  bindOne(enclave: string, robot: string): Promise<unknown> {
    return this.api.call('POST', 'v1/bindings', { json: { keystore: KEYSTORE, enclave, robot } });
  }
}
