import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import type { Gauge } from 'prom-client';
import { acceptQueueLength } from '../server/ops/accept-queue.js';
import { HttpMetrics } from '../server/ops/metrics.js';

const familyOf = (host: string) => (net.isIPv6(host) ? 'IPv6' : 'IPv4');

/**
 * Opens `count` TCP connections to `port` from another thread while this one is blocked, as a boot storm's
 * connections arrive while the server's loop is busy: the kernel completes them and queues them unaccepted.
 * Returns once they are all queued, with this thread still not having turned its loop. `close` ends them.
 */
function queueConnections(port: number, host: string, count: number): { close: () => Promise<void> } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const net = require('node:net');
     const { workerData, parentPort } = require('node:worker_threads');
     const sockets = [];
     let open = 0;
     for (let i = 0; i < workerData.count; i++) {
       const s = net.connect(workerData.port, workerData.host, () => {
         if (++open === workerData.count) { Atomics.store(workerData.flag, 0, 1); Atomics.notify(workerData.flag, 0); }
       });
       s.on('error', () => {});
       sockets.push(s);
     }
     parentPort.on('message', () => { for (const s of sockets) s.destroy(); parentPort.close(); });`,
    { eval: true, workerData: { port, host, count, flag } },
  );
  if (Atomics.wait(flag, 0, 0, 10_000) !== 'ok') {
    void worker.terminate();
    assert.fail(`${count} connections to ${host}:${port} not made within 10 s`);
  }
  // The client's connect fires on the SYN-ACK; its ACK puts the connection in the queue a moment later.
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 200 && (acceptQueueLength(port, familyOf(host)) ?? 0) < count; i++) Atomics.wait(pause, 0, 0, 10);
  return {
    close: async () => {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage('close');
      await exited;
    },
  };
}

async function listening(host: string): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen({ port: 0, host, backlog: 128 }, resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

describe('the kernel accept queue: connections completed and not yet accepted', () => {
  test('read from /proc/net for a listening port, IPv4 and IPv6', async () => {
    for (const host of ['127.0.0.1', '::1']) {
      const family = familyOf(host);
      const { server, port } = await listening(host);
      let idle, queued, accepted;
      try {
        idle = acceptQueueLength(port, family);
        const made = queueConnections(port, host, 37);
        queued = acceptQueueLength(port, family);
        await new Promise((r) => setTimeout(r, 100)); // the loop turns: the server accepts them all
        accepted = acceptQueueLength(port, family);
        await made.close();
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
      assert.equal(idle, 0, `${host}: listening, nothing waiting`);
      assert.equal(queued, 37, `${host}: 37 connections made while this thread was blocked`);
      assert.equal(accepted, 0, `${host}: accepted`);
      assert.equal(acceptQueueLength(port, family), 0, `${host}: no listener on the port any more`);
    }
  });

  test('/metrics shows it as enclave_accept_queue_connections, read at each scrape', async () => {
    const { server, port } = await listening('127.0.0.1');
    const metrics = new HttpMetrics(false);
    metrics.watchAcceptQueue(server);
    const gauge = metrics.registry.getSingleMetric('enclave_accept_queue_connections') as Gauge;
    let during, after;
    try {
      const made = queueConnections(port, '127.0.0.1', 40);
      // A scrape's collect runs as it starts, before this thread's loop turns and accepts the connections.
      during = gauge.get();
      await new Promise((r) => setTimeout(r, 100));
      after = await metrics.text();
      await made.close();
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    assert.equal((await during).values[0]?.value, 40);
    assert.match(after, /^enclave_accept_queue_connections 0$/m, 'accepted since');
  });
});
