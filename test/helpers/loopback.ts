import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { HttpClient } from '../../client/common/http.js';

/** A real HTTP server on loopback answering with `handler`, and an HttpClient pointed at it. */
export async function loopbackClient(handler: http.RequestListener): Promise<{ client: HttpClient; close: () => void }> {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = new HttpClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  return {
    client,
    close: () => {
      client.close();
      server.close();
    },
  };
}
