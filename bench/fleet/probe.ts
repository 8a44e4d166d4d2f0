import { HttpClient } from '../../client/common/http.js';
import { failureKind } from './robot.js';
import type { Tally } from './stats.js';

/**
 * `GET /health` every `everyMs` over one keep-alive connection while something else happens: how long the
 * server's event loop keeps other requests waiting (no TLS handshake in these numbers).
 */
export class HealthProbe {
  readonly latencies: number[] = [];
  readonly errors: Tally = {};
  private stopped = false;
  private readonly done: Promise<void>;
  private readonly http: HttpClient;

  constructor(url: string, caPem: string, everyMs = 100) {
    this.http = new HttpClient(url, caPem);
    this.done = this.loop(everyMs);
  }

  private async loop(everyMs: number): Promise<void> {
    while (!this.stopped) {
      const t0 = Date.now();
      try {
        const res = await this.http.request({ method: 'GET', path: 'health', timeoutMs: 30_000 });
        if (res.status === 200) this.latencies.push(Date.now() - t0);
        else this.errors[`http-${res.status}`] = (this.errors[`http-${res.status}`] ?? 0) + 1;
      } catch (err) {
        const kind = failureKind(err);
        this.errors[kind] = (this.errors[kind] ?? 0) + 1;
      }
      const gap = t0 + everyMs - Date.now();
      if (gap > 0 && !this.stopped) await new Promise((r) => setTimeout(r, gap));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    this.http.close();
  }
}
