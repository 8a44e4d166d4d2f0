/**
 * The shipped systemd units: `systemd-analyze verify` must accept them without a single warning, and they
 * must carry what the contract asks. verify insists that ExecStart= binaries exist, so the test verifies a
 * copy whose /usr/bin/enclave-agent points at this repository's bin/enclave-agent.js.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { REPO } from './helpers/agent-proc.js';

const UNIT = join(REPO, 'client/systemd/enclave-agent.service');
const DROPIN = join(REPO, 'client/systemd/ros2-app.service.d-example.conf');
const haveAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;
const work = fs.mkdtempSync(join(tmpdir(), 'agent-systemd-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

function settings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

function verify(...units: string[]): { status: number | null; output: string } {
  const r = spawnSync('systemd-analyze', ['verify', ...units], { encoding: 'utf8', cwd: work });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

describe('agent systemd units', () => {
  test('enclave-agent.service has the contract settings', () => {
    const s = settings(fs.readFileSync(UNIT, 'utf8'));
    const expect: Record<string, string> = {
      Type: 'notify',
      ExecStart: '/usr/bin/enclave-agent run',
      ExecStopPost: '/usr/bin/enclave-agent purge',
      RuntimeDirectory: 'enclave-agent',
      RuntimeDirectoryMode: '0700',
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      PrivateTmp: 'yes',
      LimitCORE: '0',
      MemorySwapMax: '0',
      Restart: 'on-failure',
      ReadWritePaths: '/var/lib/enclave-agent',
    };
    for (const [k, v] of Object.entries(expect)) assert.deepEqual(s.get(k), [v], k);
  });

  test('systemd-analyze verify accepts enclave-agent.service and the ROS 2 drop-in without warnings', { skip: !haveAnalyze && 'systemd-analyze not installed' }, () => {
    const bin = join(REPO, 'bin/enclave-agent.js');
    fs.accessSync(bin, fs.constants.X_OK);
    fs.writeFileSync(join(work, 'enclave-agent.service'), fs.readFileSync(UNIT, 'utf8').replaceAll('/usr/bin/enclave-agent', bin));
    const agent = verify('./enclave-agent.service');
    assert.equal(agent.status, 0, agent.output);
    assert.equal(agent.output, '', 'no warnings');

    fs.writeFileSync(join(work, 'ros2-app.service'), '[Unit]\nDescription=ROS 2 demo\n[Service]\nExecStart=/bin/sleep infinity\n');
    fs.mkdirSync(join(work, 'ros2-app.service.d'), { recursive: true });
    fs.copyFileSync(DROPIN, join(work, 'ros2-app.service.d/enclave.conf'));
    const app = verify('./ros2-app.service', './enclave-agent.service');
    assert.equal(app.status, 0, app.output);
    assert.equal(app.output, '', 'no warnings');

    // The check is real: a broken drop-in is reported.
    fs.appendFileSync(join(work, 'ros2-app.service.d/enclave.conf'), 'NoSuchSetting=1\n');
    assert.match(verify('./ros2-app.service').output, /Unknown key 'NoSuchSetting'/);
  });

  test('the drop-in points ROS 2 at the agent with security enforced', () => {
    const s = settings(fs.readFileSync(DROPIN, 'utf8'));
    assert.deepEqual(s.get('After'), ['enclave-agent.service']);
    assert.deepEqual(s.get('BindsTo'), ['enclave-agent.service']);
    const env = s.get('Environment') ?? [];
    assert.ok(env.includes('ROS_SECURITY_ENABLE=true'));
    assert.ok(env.includes('ROS_SECURITY_STRATEGY=Enforce'));
    assert.ok(env.some((e) => /^ROS_SECURITY_KEYSTORE=\/run\/enclave-agent\/\w+$/.test(e)));
  });
});
