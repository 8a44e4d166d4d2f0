/**
 * sd_notify with a real unix datagram receiver (python3): messages arrive attributed to the agent's own PID
 * (what systemd needs with NotifyAccess=main), READY=1 only once every bound enclave is on disk, never
 * without enclaves (fail closed), STOPPING=1 on SIGTERM; and sd_notify never fails the process.
 * `run` pulls from the real server (`server/main.ts serve` as a child process).
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { sdNotify } from '../client/agent/notify.js';
import { NotifyReceiver } from './helpers/agent-notify.js';
import { enrollAgent, shmDir, spawnAgent, waitUntil } from './helpers/agent-proc.js';
import { serverFixture, type ServerFixture } from './helpers/agent-server.js';

const base = fs.mkdtempSync(join(tmpdir(), 'agent-notify-'));
let fx: ServerFixture | undefined;

after(async () => {
  await fx?.stop();
  fs.rmSync(base, { recursive: true, force: true });
});

describe('agent sd_notify', () => {
  test('sends VAR=VALUE datagrams attributed to this process, one line each', async () => {
    const dir = fs.mkdtempSync(join(base, 'unit-'));
    const rx = await NotifyReceiver.start(dir);
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = rx.socketPath;
    try {
      sdNotify({ READY: '1', STATUS: 'two\nlines' });
      await waitUntil('READY=1', () => rx.find('READY', '1') !== undefined, 5000);
      const m = rx.find('READY')!;
      assert.equal(m.pid, process.pid, 'sender is the agent itself, not the helper it spawned');
      assert.equal(m.fields.STATUS, 'two lines');
    } finally {
      process.env.NOTIFY_SOCKET = saved;
      rx.stop();
    }
  });

  test('does nothing without NOTIFY_SOCKET and never throws when systemd is not there', async () => {
    const saved = process.env.NOTIFY_SOCKET;
    try {
      delete process.env.NOTIFY_SOCKET;
      assert.doesNotThrow(() => sdNotify({ READY: '1' }));
      process.env.NOTIFY_SOCKET = join(base, 'nobody-listens.sock');
      const logger = (into: string[]) => ({ debug() {}, info() {}, error() {}, warn: (m: string) => into.push(m) });
      // A failure nobody logs (the first test's sender fails too when its receiver is gone before the barrier)
      // must not use up the warning of a call that has a logger.
      assert.doesNotThrow(() => sdNotify({ READY: '1' }));
      const warnings: string[] = [];
      assert.doesNotThrow(() => sdNotify({ READY: '1' }, logger(warnings)));
      // The sender is killed after 5 s at most; a loaded machine may take that long.
      await waitUntil('the failure to be logged', () => warnings.length > 0, 15_000);
      assert.match(warnings[0]!, /could not notify systemd/);
      // Once per logger, not once per process: another logger is told too.
      const other: string[] = [];
      sdNotify({ READY: '1' }, logger(other));
      await waitUntil('the other logger to be told', () => other.length > 0, 15_000);
    } finally {
      process.env.NOTIFY_SOCKET = saved;
    }
  });

  test('run: READY=1 only after every bound enclave is in place, never without enclaves; STOPPING=1 on SIGTERM', async () => {
    // The real server (a child process). Three enclaves are bound by label selector to a label the robot
    // does not have yet: giving it the label binds all three in one change (one new bundle revision).
    fx = await serverFixture({ dataDir: join(base, 'data') });
    const { admin, server } = fx;
    await admin.createKeystore('ks');
    for (const path of ['/a', '/m/n', '/z/last']) {
      await admin.createEnclave('ks', path);
      await admin.bindSelector('ks', path, { notify: 'yes' });
    }
    await admin.createRobot('notify_robot', { notify: 'not-yet' });
    const stateDir = await enrollAgent({ base, server: server.url, caFile: server.caFile, token: await admin.enrollmentToken('notify_robot') });
    const rt = shmDir('agent-notify');
    try {
      const lastKey = join(rt, 'ks/enclaves/z/last/key.pem');
      const rx = await NotifyReceiver.start(fs.mkdtempSync(join(base, 'rx-')), lastKey);
      const p = spawnAgent(['run', '--state-dir', stateDir, '--runtime-dir', rt, '--splay', '0'], { env: { NOTIFY_SOCKET: rx.socketPath } });
      try {
        // Nothing bound yet: the agent must not report ready.
        await waitUntil('a waiting status', () => rx.messages.some((m) => /waiting/.test(m.fields.STATUS ?? '')), 5000);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(rx.find('READY'), undefined, 'no READY=1 without enclaves');

        await admin.setLabels('notify_robot', { notify: 'yes' });
        await waitUntil('READY=1', () => rx.find('READY', '1') !== undefined, 5000);
        const ready = rx.find('READY', '1')!;
        assert.equal(ready.fileExists, true, 'the last enclave was on disk when READY=1 arrived');
        assert.equal(ready.pid, p.child.pid, 'attributed to the main PID');
        assert.match(ready.fields.STATUS ?? '', /^holding 3 enclave\(s\) in 1 keystore\(s\), revision \S+, next expiry /);

        p.child.kill('SIGTERM');
        assert.equal((await p.exited).code, 0);
        await waitUntil('STOPPING=1', () => rx.find('STOPPING', '1') !== undefined, 5000);
        assert.equal(rx.messages.filter((m) => m.fields.READY).length, 1, 'READY=1 sent once');
      } finally {
        p.child.kill('SIGKILL');
        rx.stop();
      }
    } finally {
      fs.rmSync(rt, { recursive: true, force: true });
    }
  });
});
