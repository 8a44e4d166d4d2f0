/**
 * The agent's pull loop (`watchBundles`) and enrollment loading, at the level of the agent's own functions.
 * The loop gets a scripted bundle source in place of the server client: these tests cover server behaviour
 * that the real server never shows (answering every long poll at once with the same revision, ignoring
 * If-None-Match) and local request failures. Everything the real server does is covered by the process
 * tests against it (agent-run, agent-exec, agent-e2e).
 */
import { generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../client/agent/backoff.js';
import type { BundleFetch } from '../client/agent/robot-client.js';
import { loadEnrollment } from '../client/agent/state.js';
import { MIN_POLL_INTERVAL_MS, watchBundles, type BundleSource } from '../client/agent/watch.js';
import { taggedEnclaveFiles } from './helpers/agent-files.js';

const base = fs.mkdtempSync(join(tmpdir(), 'agent-watch-'));
after(() => fs.rmSync(base, { recursive: true, force: true }));

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

function bundle(revision: string | number): unknown {
  return {
    revision,
    keystores: [{ name: 'ks', enclaves: [{ path: '/a', notAfter: '2099-01-01T00:00:00Z', files: taggedEnclaveFiles(String(revision)) }] }],
  };
}

/** A bundle source answering each request at once (next event-loop turn) with `answer(n)`, recording the requests. */
function source(answer: (n: number, etag: string | undefined) => BundleFetch | Error): BundleSource & { calls: { at: number; etag: string | undefined }[] } {
  const calls: { at: number; etag: string | undefined }[] = [];
  return {
    calls,
    async fetchBundle({ etag }) {
      calls.push({ at: performance.now(), etag });
      await new Promise((r) => setImmediate(r)); // an answer that arrives at once, as from a socket
      const a = answer(calls.length, etag);
      if (a instanceof Error) throw a;
      return a;
    },
  };
}

/** Runs the loop for `ms`, returning what it handed on. */
async function watchFor(ms: number, client: BundleSource): Promise<{ bundles: string[]; contacts: boolean[]; troubles: number }> {
  const abort = new AbortController();
  const out = { bundles: [] as string[], contacts: [] as boolean[], troubles: 0 };
  const timer = setTimeout(() => abort.abort(), ms);
  await watchBundles({
    client,
    log: quiet,
    signal: abort.signal,
    pollWaitS: 30,
    backoff: new Backoff(100, 1000, () => 0), // no backoff wait: only the poll interval paces the loop
    onBundle: (b) => void out.bundles.push(String(b.revision)),
    onContact: (changed) => void out.contacts.push(changed),
    onTrouble: () => void out.troubles++,
  });
  clearTimeout(timer);
  return out;
}

describe('agent watch loop', () => {
  test('a server that answers at once with the same revision: no change, and at most one request per interval', async () => {
    const client = source(() => ({ changed: true, body: bundle('r7'), etag: '"r7"' }));
    const r = await watchFor(1300, client);
    assert.deepEqual(r.bundles, ['r7'], 'the bundle is handed on once');
    assert.ok(client.calls.length >= 2 && client.calls.length <= 3, `${client.calls.length} requests in 1.3 s`);
    for (let i = 1; i < client.calls.length; i++) {
      const gap = client.calls[i]!.at - client.calls[i - 1]!.at;
      assert.ok(gap >= MIN_POLL_INTERVAL_MS - 5, `gap ${gap} ms`);
    }
    assert.deepEqual(r.contacts.slice(1), r.contacts.slice(1).map(() => false), 'later answers count as "nothing new"');
  });

  test('paced on every path: new revisions each time, 304s at once, and errors with no backoff', async () => {
    for (const [label, answer] of [
      ['new revision every time', (n: number) => ({ changed: true as const, body: bundle(`r${n}`), etag: undefined })],
      ['304 at once', (n: number) => (n === 1 ? { changed: true as const, body: bundle('r1'), etag: undefined } : { changed: false as const })],
      ['failing at once', () => new Error('ECONNRESET')],
      ['invalid bundles', () => ({ changed: true as const, body: { revision: 'bad revision!', keystores: [] }, etag: undefined })],
    ] as const) {
      const client = source(answer);
      await watchFor(1100, client);
      assert.ok(client.calls.length <= 3, `${label}: ${client.calls.length} requests in 1.1 s`);
    }
  });

  test('If-None-Match is built from the checked revision; a failed request (also a local one) drops it', async () => {
    const local = Object.assign(new TypeError('Invalid character in header content ["if-none-match"]'), { code: 'ERR_INVALID_CHAR' });
    const client = source((n) => (n === 2 ? local : { changed: true, body: bundle('abc123'), etag: '"something else\r\nx: y"' }));
    const r = await watchFor(1300, client);
    assert.deepEqual(
      client.calls.map((c) => c.etag),
      [undefined, '"abc123"', undefined].slice(0, client.calls.length),
    );
    assert.equal(r.troubles, 1);
    assert.deepEqual(r.bundles, ['abc123'], 'the same revision fetched again is not a change');
  });
});

describe('agent enrollment loading', () => {
  function enrolled(name: string): string {
    const dir = join(base, name);
    fs.mkdirSync(dir, { mode: 0o700 });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    fs.writeFileSync(join(dir, 'device.key.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    fs.writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n', { mode: 0o644 });
    fs.writeFileSync(join(dir, 'state.json'), JSON.stringify({ version: 1, server: 'https://robots.example', robot: 'r1', labels: {} }), { mode: 0o600 });
    return dir;
  }

  test('accepts a private state folder', () => {
    const e = loadEnrollment(enrolled('ok'));
    assert.equal(e.robot, 'r1');
    assert.match(e.ca!, /BEGIN CERTIFICATE/);
  });

  const cases: [string, (dir: string) => void, RegExp][] = [
    ['state folder writable by others', (d) => fs.chmodSync(d, 0o777), /state folder .* is writable by others \(mode 777\)/],
    ['state folder of another user', (d) => fs.chownSync(d, 65534, 65534), /state folder .* belongs to uid 65534, not to this agent/],
    ['pinned CA writable by others', (d) => fs.chmodSync(join(d, 'ca.pem'), 0o666), /pinned CA .*ca\.pem is writable by others \(mode 666\)/],
    ['pinned CA of another user', (d) => fs.chownSync(join(d, 'ca.pem'), 65534, 65534), /pinned CA .*ca\.pem belongs to uid 65534/],
    ['pinned CA a symlink', (d) => {
      fs.renameSync(join(d, 'ca.pem'), join(d, 'real.pem'));
      fs.symlinkSync(join(d, 'real.pem'), join(d, 'ca.pem'));
    }, /pinned CA .*ca\.pem is not a regular file/],
    ['state.json writable by group', (d) => fs.chmodSync(join(d, 'state.json'), 0o620), /enrollment file .*state\.json is writable by others \(mode 620\)/],
    ['state.json of another user', (d) => fs.chownSync(join(d, 'state.json'), 65534, 65534), /enrollment file .*state\.json belongs to uid 65534/],
    ['device key of another user', (d) => fs.chownSync(join(d, 'device.key.pem'), 65534, 65534), /device key .* belongs to uid 65534/],
  ];
  let n = 0;
  for (const [label, spoil, message] of cases) {
    test(`refuses: ${label}`, () => {
      const dir = enrolled(`bad-${++n}`);
      spoil(dir);
      assert.throws(() => loadEnrollment(dir), message);
    });
  }
});
