import type { RequestHandler } from 'express';
import type { AddressInfo, Server } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { acceptQueueLength } from './accept-queue.js';

/** One registry per app instance, so tests can build many apps in one process. */
export class HttpMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'route' | 'status'>;
  private readonly duration: Histogram<'method' | 'route' | 'status'>;
  private source: () => Promise<string> = () => this.registry.metrics();
  /**
   * Each label set's series, looked up once: prom-client hashes the labels object on every call otherwise, twice
   * per request. Routes are templates and statuses few, so this stays small.
   */
  private readonly series = new Map<string, { count: Counter.Internal; time: Histogram.Internal<'method' | 'route' | 'status'> }>();

  constructor(withProcessMetrics = true) {
    if (withProcessMetrics) collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'enclave_http_requests_total',
      help: 'HTTP requests by route template and status',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
    this.duration = new Histogram({
      name: 'enclave_http_request_duration_seconds',
      help: 'HTTP request latency by route template and status (long polls included)',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60],
      registers: [this.registry],
    });
  }

  /**
   * `enclave_accept_queue_connections`: connections the kernel holds for the server's port, not yet accepted
   * (Linux; read at each scrape). Call once the server listens. Workers share the listening socket, so the
   * cluster's figure is the largest a worker read, not their sum.
   */
  watchAcceptQueue(server: Server): void {
    const addr = server.address() as AddressInfo | null;
    if (!addr || typeof addr !== 'object') return;
    const family = addr.family === 'IPv6' ? 'IPv6' : 'IPv4';
    if (acceptQueueLength(addr.port, family) === undefined) return;
    new Gauge({
      name: 'enclave_accept_queue_connections',
      help: 'TCP connections completed by the kernel for the listening port and not yet accepted by the server',
      aggregator: 'max',
      registers: [this.registry],
      collect() {
        this.set(acceptQueueLength(addr.port, family) ?? 0);
      },
    });
  }

  middleware(): RequestHandler {
    return (req, res, next) => {
      const start = process.hrtime.bigint();
      res.on('finish', () => {
        // The route template, never the raw URL: label cardinality stays bounded and no name leaks.
        const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
        this.observe(req.method, route, res.statusCode, start);
      });
      next();
    };
  }

  /** What `/metrics` answers: this registry, or every worker's summed (see `sumOverWorkers`). */
  text(): Promise<string> {
    return this.source();
  }

  /** In a worker of several (`--workers`): a scrape reaches one of them and must see all of them. */
  sumOverWorkers(collect: () => Promise<string>): void {
    this.source = collect;
  }

  /** One finished request; `route` is a template, `start` from `process.hrtime.bigint()`. */
  observe(method: string, route: string, status: number, start: bigint): void {
    const key = `${method} ${status} ${route}`;
    let series = this.series.get(key);
    if (!series) {
      const labels = { method, route, status: String(status) };
      series = { count: this.requests.labels(labels), time: this.duration.labels(labels) };
      this.series.set(key, series);
    }
    series.count.inc();
    series.time.observe(Number(process.hrtime.bigint() - start) / 1e9);
  }
}
