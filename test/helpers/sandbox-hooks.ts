/**
 * Run by test/sandbox.test.ts in a process of its own: whether Node's promise hooks are on before, during and
 * after `XmlSandbox.within`, printed as JSON. A promise continuation has an async id of its own only while
 * they are on.
 */
import { executionAsyncId } from 'node:async_hooks';
import { XmlSandbox } from '../../server/sandbox/sandbox.js';

const hooksOn = async (): Promise<boolean> => (await Promise.resolve().then(() => executionAsyncId())) !== 0;
const policy = (topics: number) =>
  `<policy version="0.2.0"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n"><topics publish="ALLOW">${'<topic>t</topic>'.repeat(topics)}</topics></profile></profiles></enclave></enclaves></policy>`;

const sandbox = new XmlSandbox({ xmlTimeLimitMs: 60_000, importTimeLimitMs: 60_000, maxWorkers: 1 });
const seen: Record<string, boolean> = { before: await hooksOn() };
let release!: () => void;
const held = new Promise<void>((resolve) => (release = resolve));
const first = sandbox.within('xml', async () => {
  await held;
  return sandbox.run('policyXml', { xml: policy(1) });
});
await sandbox.within('xml', () => sandbox.run('policyXml', { xml: policy(2) }));
// One upload is still being read: its time limit must still reach the work it starts.
seen.whileOneUploadIsRead = await hooksOn();
release();
await first;
seen.afterBoth = await hooksOn();
await sandbox.within('import', async () => {
  seen.duringTheNext = await hooksOn();
});
seen.afterTheNext = await hooksOn();
await sandbox.close();
process.stdout.write(JSON.stringify(seen));
