/**
 * The client's side of a watch (`HttpClient.watch`): lines handed on as they arrive, gunzipped however the bytes
 * are cut, with its limits. A real HTTP server on loopback writes the bytes, cut where each test says.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { NetworkError, type HttpClient } from '../client/common/http.js';
import { loopbackClient } from './helpers/loopback.js';

/** What the server writes for the next request: a list of writes, each after the previous one was sent. */
let script: { headers: Record<string, string>; writes: Buffer[] } = { headers: {}, writes: [] };
let client: HttpClient;
let close: () => void;

before(async () => {
  ({ client, close } = await loopbackClient(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', ...script.headers });
    res.flushHeaders();
    for (const w of script.writes) {
      res.write(w);
      // Each write its own read on the client's side.
      await new Promise((r) => setTimeout(r, 20));
    }
    res.end();
  }));
});
after(() => close());

const line = (n: number, pad = 0) => Buffer.from(`${JSON.stringify({ revision: `r${n}`, pad: 'x'.repeat(pad) })}\n`);

/** Runs a watch against the scripted answer: the lines it handed on, and how it ended. */
async function watch(maxBytes?: number): Promise<{ lines: string[]; error?: unknown }> {
  const lines: string[] = [];
  const res = await client.watch({ method: 'GET', path: 'w', timeoutMs: 10_000, maxBytes }, (l) => lines.push(JSON.parse(l.toString()).revision));
  assert.ok(res.ended, 'read as a watch');
  try {
    await res.ended;
    return { lines };
  } catch (error) {
    return { lines, error };
  }
}

test('plain lines cut anywhere come out whole, in order', async () => {
  const all = Buffer.concat([line(1), line(2), line(3)]);
  script = { headers: {}, writes: [all.subarray(0, 5), all.subarray(5, 40), all.subarray(40)] };
  assert.deepEqual(await watch(), { lines: ['r1', 'r2', 'r3'] });
});

test('gzip members: whole, several in one read, and one cut inside (even inside its trailer) wait for the rest', async () => {
  const [a, b, c] = [zlib.gzipSync(line(1)), zlib.gzipSync(line(2)), zlib.gzipSync(line(3, 3000))];
  script = { headers: { 'content-encoding': 'gzip' }, writes: [a, Buffer.concat([b, c.subarray(0, 10)]), c.subarray(10, c.length - 3), c.subarray(c.length - 3)] };
  assert.deepEqual(await watch(), { lines: ['r1', 'r2', 'r3'] });
});

test('a gzipped watch that brought nothing ends cleanly', async () => {
  script = { headers: { 'content-encoding': 'gzip' }, writes: [] };
  assert.deepEqual(await watch(), { lines: [] });
});

test('past 1 MiB of gzip not yet decoded, the rest is streamed: the lines still come out whole', async () => {
  // Random text barely compresses: one line of about 1.5 MB gzipped, sent in 64 KiB writes.
  const big = Buffer.from(`${JSON.stringify({ revision: 'big', pad: randomBytes(1_200_000).toString('base64') })}\n`);
  const member = zlib.gzipSync(big);
  assert.ok(member.length > 1024 * 1024);
  const writes: Buffer[] = [];
  for (let i = 0; i < member.length; i += 65536) writes.push(member.subarray(i, i + 65536));
  script = { headers: { 'content-encoding': 'gzip' }, writes: [zlib.gzipSync(line(1)), ...writes, zlib.gzipSync(line(2))] };
  assert.deepEqual(await watch(8 * 1024 * 1024), { lines: ['r1', 'big', 'r2'] });
});

test('a broken gzip body, a truncated last member and a line over maxBytes end the watch with a NetworkError', async () => {
  script = { headers: { 'content-encoding': 'gzip' }, writes: [zlib.gzipSync(line(1)), Buffer.from('not gzip at all')] };
  let r = await watch();
  assert.deepEqual(r.lines, ['r1']);
  assert.ok(r.error instanceof NetworkError && r.error.code === 'EBADBODY', String(r.error));

  const m = zlib.gzipSync(line(2));
  script = { headers: { 'content-encoding': 'gzip' }, writes: [m.subarray(0, m.length - 4)] };
  r = await watch();
  assert.ok(r.error instanceof NetworkError && r.error.code === 'EBADBODY', String(r.error));

  script = { headers: {}, writes: [line(1), line(2, 5000)] };
  r = await watch(1000);
  assert.deepEqual(r.lines, ['r1']);
  assert.ok(r.error instanceof NetworkError && r.error.code === 'ETOOBIG', String(r.error));
});
