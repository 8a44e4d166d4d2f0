import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidInput } from '../server/errors.js';
import { XmlSandbox } from '../server/sandbox/sandbox.js';

const policy = (topics: number) =>
  `<policy version="0.2.0"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n"><topics publish="ALLOW">${'<topic>t</topic>'.repeat(topics)}</topics></profile></profiles></enclave></enclaves></policy>`;

describe('XmlSandbox: untrusted XML read in a worker with a time limit', () => {
  const sandboxes: XmlSandbox[] = [];
  const make = (xmlTimeLimitMs: number) => {
    const s = new XmlSandbox({ xmlTimeLimitMs, importTimeLimitMs: 120_000, maxWorkers: 1 });
    sandboxes.push(s);
    return s;
  };
  after(async () => {
    for (const s of sandboxes) await s.close();
  });

  test('a time limit spans nested work while it runs, and leaves no promise hooks on once every upload is read', () => {
    // In a process of its own: the test runner keeps promise hooks on in this one.
    const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./helpers/sandbox-hooks.ts', import.meta.url))], { encoding: 'utf8' });
    assert.deepEqual(JSON.parse(out), {
      before: false,
      whileOneUploadIsRead: true,
      afterBoth: false,
      duringTheNext: true,
      afterTheNext: false,
    });
  });

  test('a task answers with its result; a refusal comes back as the same 422 with its code', async () => {
    const sandbox = make(60_000);
    assert.match(await sandbox.run('policyXml', { xml: policy(2) }), /<topic>t<\/topic><topic>t<\/topic>/);
    await assert.rejects(sandbox.run('governance', { xml: '<!DOCTYPE dds><dds/>' }), (err: unknown) => {
      assert.ok(err instanceof InvalidInput);
      assert.equal(err.code, 'invalid-governance');
      assert.match(err.message, /must not contain a DOCTYPE/);
      return true;
    });
    // The worker that refused is sound: it answers the next task.
    assert.deepEqual(await sandbox.run('governance', { xml: '<dds/>' }), null);
  });

  test('a task past the time limit is stopped (worker terminated) and refused; the next task gets a fresh worker', async () => {
    // 40 000 topics take far longer than 1 ms to parse and serialize on any machine.
    const slow = make(1);
    await slow.warm();
    await assert.rejects(slow.run('policyXml', { xml: policy(40_000) }), (err: unknown) => {
      assert.ok(err instanceof InvalidInput);
      assert.equal(err.code, 'invalid-policy');
      assert.match(err.message, /the policy took longer than 1 ms to read: it is refused/);
      return true;
    });
    // Same sandbox, at once: answered within its limit again, not stuck behind the dead worker (refused as too
    // slow, or as busy while the replacement is still starting: the limit counts that wait too).
    await assert.rejects(slow.run('policyXml', { xml: policy(40_000) }), /took longer than 1 ms|could not start on the policy in time/);
    // Once the replacement is up, it takes tasks again.
    await slow.warm();
    await assert.rejects(slow.run('policyXml', { xml: policy(40_000) }), /took longer than 1 ms/);
  });

  test('permissions for several enclaves in one task; a missing enclave is reported, not thrown', async () => {
    const sandbox = make(60_000);
    const times = { notBefore: Date.UTC(2030, 0, 1), notAfter: Date.UTC(2031, 0, 1), domainId: 7 };
    const ok = await sandbox.run('permissions', { policyXml: policy(1), paths: ['/a'], ...times });
    assert.ok('permissions' in ok);
    assert.match(ok.permissions[0]!, /<subject_name>CN=\/a<\/subject_name>/);
    assert.match(ok.permissions[0]!, /<id>7<\/id>/);
    assert.deepEqual(await sandbox.run('permissions', { policyXml: policy(1), paths: ['/a', '/b'], ...times }), { missing: ['/b'] });
  });
});
