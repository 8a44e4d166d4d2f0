/**
 * A robot worker process (forked by pool.ts): holds a share of the simulated fleet and runs what the parent
 * asks over IPC. Robots live in several processes because their TLS work is real CPU too; the parent
 * measures each worker's CPU from /proc and reports it apart from the server's.
 */
import { setMaxListeners } from 'node:events';
import { HttpClient } from '../../client/common/http.js';
import type { FromWorker, StormResult, ToWorker } from './protocol.js';
import { BadAnswer, failureKind, REQUEST_TIMEOUT_MS, SimRobot } from './robot.js';
import { retryAfterMs, type Tally } from './stats.js';
import * as tls from 'node:tls';

const ENROLL_CONCURRENCY = 4;

let robots: SimRobot[] = [];
let caPem = '';
/** Parsed once per worker: a real robot parses its pinned CA once too, not per connection. */
let secureContext: tls.SecureContext | undefined;
let pollWaitS = 30;
const polling = new AbortController();
// Every robot's poll loop waits on this one signal.
setMaxListeners(0, polling.signal);
const loops: Promise<void>[] = [];

function send(msg: FromWorker): void {
  process.send!(msg);
}

async function init(msg: Extract<ToWorker, { type: 'init' }>): Promise<void> {
  caPem = msg.caPem;
  secureContext = tls.createSecureContext({ ca: caPem });
  pollWaitS = msg.pollWaitS;
  robots = msg.robots.map((r) => new SimRobot(r.name, { url: r.url, caPem, secureContext, pollWaitS: msg.pollWaitS, validate: msg.validate }));
  const clients = new Map<string, HttpClient>();
  const errors: Tally = {};
  let next = 0;
  let done = 0;
  let failed = 0;
  const lane = async (): Promise<void> => {
    while (next < robots.length) {
      const i = next++;
      const spec = msg.robots[i]!;
      let http = clients.get(spec.url);
      if (!http) clients.set(spec.url, (http = new HttpClient(spec.url, caPem, secureContext)));
      try {
        await robots[i]!.enroll(http, spec.token);
      } catch (err) {
        failed++;
        const kind = failureKind(err);
        errors[kind] = (errors[kind] ?? 0) + 1;
      }
      if (++done % 250 === 0) send({ type: 'progress', done: 250 });
    }
  };
  await Promise.all(Array.from({ length: ENROLL_CONCURRENCY }, lane));
  for (const c of clients.values()) c.close();
  if (done % 250) send({ type: 'progress', done: done % 250 });
  send({ type: 'enrolled', count: robots.length - failed, failed, errors });
}

/** Every robot arrives at its offset; the control pays a fresh TLS connection + GET /health, a boot a fresh connection + login + bundle. */
async function storm(msg: Extract<ToWorker, { type: 'storm' }>): Promise<StormResult> {
  const result: StormResult = { served: [], neverServed: 0, attempts: 0, longestAttemptMs: 0, startLagMs: [], errors: {} };
  const stats = { attempts: 0, longestMs: 0 };
  for (const r of robots) r.errors = {};
  await Promise.all(
    robots.map(async (robot, i) => {
      if (!robot.key) return; // enrollment failed: counted there
      const at = msg.startAt + msg.offsets[i]!;
      await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
      result.startLagMs.push(Date.now() - at);
      const giveUpAt = at + msg.giveUpAfterMs;
      let ms: number | undefined;
      if (msg.kind === 'control') {
        const http = new HttpClient(robot.url, caPem, secureContext);
        ms = await robot.untilServed(async () => {
          const res = await http.request({ method: 'GET', path: 'health', timeoutMs: REQUEST_TIMEOUT_MS });
          if (res.status !== 200) throw new BadAnswer(`health-http-${res.status}`, retryAfterMs(res.headers['retry-after'], Date.now()));
        }, giveUpAt, stats);
        http.close();
      } else {
        robot.reconnect();
        ms = await robot.untilServed(async () => {
          if (!(await robot.fetch(0)) && !robot.revision) throw new BadAnswer('bundle-empty');
          if (msg.kind === 'boot-identity') {
            if (robot.needIdentity.length === 0) throw new BadAnswer('bundle-no-per-robot-enclave');
            await robot.requestIdentities();
          }
        }, giveUpAt, stats);
        if (ms !== undefined) {
          await robot.reportIfPending();
          if (msg.pollAfterBoot) startPolling(robot, 0);
        }
      }
      if (ms === undefined) result.neverServed++;
      else result.served.push(ms);
    }),
  );
  result.attempts = stats.attempts;
  result.longestAttemptMs = stats.longestMs;
  for (const r of robots) for (const [k, v] of Object.entries(r.errors)) result.errors[k] = (result.errors[k] ?? 0) + v;
  return result;
}

const pollingRobots = new Set<SimRobot>();

/** Starts the robot's watch loop (once) after a random delay of up to `spreadMs`. */
function startPolling(robot: SimRobot, spreadMs: number): void {
  if (pollingRobots.has(robot)) return;
  pollingRobots.add(robot);
  loops.push(
    (async () => {
      if (spreadMs > 0) await new Promise((r) => setTimeout(r, Math.random() * spreadMs));
      if (!robot.client) robot.reconnect();
      await robot.pollLoop(polling.signal);
    })(),
  );
}

// The benchmark went away: so do its robots.
process.on('disconnect', () => process.exit(0));

process.on('message', (raw: ToWorker) => {
  void (async () => {
    try {
      switch (raw.type) {
        case 'init':
          await init(raw);
          break;
        case 'storm':
          send({ type: 'storm-done', id: raw.id, result: await storm(raw) });
          break;
        case 'poll-start':
          for (const robot of robots) if (robot.key) startPolling(robot, raw.spreadMs);
          break;
        case 'status':
          send({ type: 'status', id: raw.id, waiting: robots.filter((r) => r.waiting).length, holding: robots.filter((r) => r.revision).length, robots: robots.length, reportsPending: robots.filter((r) => r.reportPending).length });
          break;
        case 'mark':
          for (const r of robots) {
            r.answers = [];
            r.errors = {};
          }
          send({ type: 'marked', id: raw.id });
          break;
        case 'collect': {
          const errors: Tally = {};
          for (const r of robots) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
          const early = raw.pollWaitS * 1000 - 1000;
          send({
            type: 'collected',
            id: raw.id,
            result: {
              changed: robots.filter((r) => r.changedAt >= raw.since).map((r) => ({ name: r.name, at: r.changedAt })),
              woken: robots.filter((r) => r.answers.some((a) => a.at >= raw.since && (a.status !== 304 || a.at - a.startedAt < early))).map((r) => r.name),
              errors,
            },
          });
          break;
        }
        case 'token': {
          const robot = robots.find((r) => r.key && r.revision)!;
          await robot.login();
          send({ type: 'token', id: raw.id, name: robot.name, token: robot.token!.value, etag: robot.etag! });
          break;
        }
        case 'stop':
          polling.abort();
          for (const r of robots) r.close();
          await Promise.allSettled(loops);
          process.disconnect();
          break;
      }
    } catch (err) {
      send({ type: 'error', message: err instanceof Error ? err.stack ?? err.message : String(err) });
    }
  })();
});
