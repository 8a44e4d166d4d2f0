import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import zlib from 'node:zlib';
import { NetworkError, type HttpClient } from '../client/common/http.js';
import { loopbackClient } from './helpers/loopback.js';

/** The clients' HTTP layer against a real loopback server: what it asks for and what it accepts back. */
describe('HttpClient: compressed answers', () => {
  let client: HttpClient;
  let close: () => void;
  const asked: http.IncomingHttpHeaders[] = [];
  const answers: Record<string, { encoding?: string; body: Buffer }> = {
    '/ok': { encoding: 'gzip', body: zlib.gzipSync(JSON.stringify({ revision: 'r1' })) },
    '/plain': { body: Buffer.from('{"revision":"r2"}') },
    '/bomb': { encoding: 'gzip', body: zlib.gzipSync(Buffer.alloc(4 * 1024 * 1024)) },
    '/corrupt': { encoding: 'gzip', body: Buffer.from('not gzip at all') },
    '/brotli': { encoding: 'br', body: zlib.brotliCompressSync('{}') },
  };

  before(async () => {
    ({ client, close } = await loopbackClient((req, res) => {
      asked.push(req.headers);
      const a = answers[req.url!]!;
      res.writeHead(200, { 'content-type': 'application/json', ...(a.encoding ? { 'content-encoding': a.encoding } : {}) });
      res.end(a.body);
    }));
  });
  after(() => close());

  const get = (path: string) => client.request({ method: 'GET', path: path.slice(1), timeoutMs: 5000, maxBytes: 1024 * 1024 });
  const refusal = async (path: string) => {
    const err = await get(path).then(
      () => assert.fail('accepted'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof NetworkError);
    return err;
  };

  test('asks for gzip and reads a gzipped answer as the JSON it holds; a plain one as it is', async () => {
    assert.deepEqual(JSON.parse((await get('/ok')).body.toString()), { revision: 'r1' });
    assert.equal(asked.at(-1)!['accept-encoding'], 'gzip');
    assert.deepEqual(JSON.parse((await get('/plain')).body.toString()), { revision: 'r2' });
  });

  test('refuses an answer that inflates past the size limit, a corrupt one, and an encoding it did not ask for', async () => {
    assert.equal((await refusal('/bomb')).code, 'ETOOBIG');
    assert.equal((await refusal('/corrupt')).code, 'EBADBODY');
    const br = await refusal('/brotli');
    assert.equal(br.code, 'EBADBODY');
    assert.match(br.message, /Content-Encoding "br"/);
  });
});
