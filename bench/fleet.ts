/**
 * Fleet benchmark: boot storms, change fan-out and steady state on the real server.
 *
 *   npm run bench:fleet -- --robots N --window S [--workers 2] [--poll-wait 30] [--give-up 180]
 *                          [--steady 5] [--connections 50] [--validate] [--seed 1] [--json FILE]
 *                          [--identity shared|per-robot] [--replicas N --database-url postgres://…]
 *
 * Starts the server under test (bench/fleet/server.ts: its own data folder, HTTPS with self-generated TLS),
 * sets up a keystore with two enclaves bound to every robot by a label selector, creates and enrolls N
 * simulated robots (each its own P-256 device key; bench/fleet/robot.ts) spread over worker processes,
 * then measures, in one run:
 *   (a) control storm   every robot arrives once (uniform over the window): fresh TLS + GET /health
 *   (b) boot storm      the same arrival times: fresh TLS + device login + bundle, retried like the agent;
 *                       then each robot waits for changes on a watch at once, as the agent does (not with --identity
 *                       per-robot), and the phase's CPU stops when all are served: the reports the server
 *                       asked for on the next contact are costed after it, as a tail of their own
 *   (b') per-robot boot with --identity per-robot: both enclaves switched to per-robot mode (PATCH), the same
 *                       arrivals: fresh TLS + login + bundle + one CSR per enclave (`POST /v1/robot/identity`,
 *                       a fresh P-256 key each, as the agent does); then switched back to shared for (c)
 *   (c) fan-out         all robots watch (`?watch=`, see robot.ts); one enclave bound to all of them is rotated: time from the
 *                       rotate request to each robot holding the new bundle, the admin request's latency,
 *                       /health latency meanwhile; then the reports' tail, as after (b)
 *   (d) one robot       an enclave is bound to one robot: that robot's latency and how many others woke
 *   steady state        wrk (or autocannon) with --connections keep-alive connections: GET /health, one
 *                       robot's bundle (200) and If-None-Match (304), against nginx serving the same bytes
 * With --replicas N --database-url URL (a PostgreSQL server where that role may CREATE DATABASE) the same
 * phases run twice in one invocation, each on a fresh database made on that server and dropped afterwards:
 * one server process on PostgreSQL, then N replicas on one database (bench/fleet/server.ts startReplicas),
 * robot i talking to replica i mod N (what a round-robin or least-connections balancer does; no balancer
 * process runs), the admin to replica 0; server CPU and RSS are summed over the replicas. The summary ends
 * with the ratios N replicas ÷ 1. Without --replicas: one server process on SQLite, as before.
 * Progress goes to stderr, the summary to stdout (Markdown), everything to --json FILE.
 *
 * Each robot holds a socket in the server: N above the open-files limit fails with EMFILE. Node raises its
 * soft limit to the hard one by itself; when the hard limit is too low the script says so and stops.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { HttpClient } from '../client/common/http.js';
import { FleetAdmin, SHARED_ENCLAVES, SOLO_ENCLAVE } from './fleet/admin.js';
import { RobotPool } from './fleet/pool.js';
import { HealthProbe } from './fleet/probe.js';
import { BackendCpu, checkDatabaseUrl, createBenchDatabase, type BenchDatabase } from './fleet/database.js';
import { formatComparison, formatReport, type FanoutReport, type FleetResult, type ReplicaDelivery, type ReportTail, type StormReport } from './fleet/report.js';
import { buildServer, startReplicas, startServerUnderTest, type ServerUnderTest } from './fleet/server.js';
import { arrivals, cpuTicks, RssSampler, stealShare, summarize, sumCpuMs, sumRssKiB } from './fleet/stats.js';
import { haveWrk, loadAll, NGINX, startNginx, type Nginx } from './fleet/steady.js';

const { values } = parseArgs({
  options: {
    robots: { type: 'string', default: '200' },
    window: { type: 'string', default: '5' },
    workers: { type: 'string', default: String(Math.max(1, Math.min(4, os.cpus().length))) },
    'poll-wait': { type: 'string', default: '30' },
    'give-up': { type: 'string', default: '180' },
    steady: { type: 'string', default: '5' },
    connections: { type: 'string', default: '50' },
    validate: { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
    json: { type: 'string' },
    'cpu-prof': { type: 'string' },
    identity: { type: 'string', default: 'shared' },
    replicas: { type: 'string' },
    'server-workers': { type: 'string', default: '1' },
    'server-node-args': { type: 'string' },
    'database-url': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function usage(problem?: string): never {
  if (problem) process.stderr.write(`bench:fleet: ${problem}\n`);
  process.stderr.write('usage: npm run bench:fleet -- --robots N --window S [--workers W] [--poll-wait S] [--give-up S] [--steady S|0] [--connections C] [--validate] [--seed K] [--json FILE] [--cpu-prof DIR] [--identity shared|per-robot] [--server-workers N] [--server-node-args="FLAGS"] [--replicas N --database-url postgres://…]\n');
  process.exit(problem ? 2 : 0);
}
if (values.help) usage();
const int = (name: keyof typeof values, min: number, max: number): number => {
  const v = Number(values[name]);
  if (!Number.isInteger(v) || v < min || v > max) usage(`--${name} must be an integer from ${min} to ${max}`);
  return v;
};
const N = int('robots', 1, 100_000);
const WINDOW_S = int('window', 0, 3600);
const WORKERS = Math.min(int('workers', 1, 64), N);
const POLL_WAIT_S = int('poll-wait', 2, 60);
const GIVE_UP_S = int('give-up', 10, 3600);
const STEADY_S = int('steady', 0, 600);
const CONNECTIONS = int('connections', 1, 10_000);
const SEED = int('seed', 0, 2 ** 31);
if (values.identity !== 'shared' && values.identity !== 'per-robot') usage('--identity must be shared or per-robot');
const PER_ROBOT = values.identity === 'per-robot';
const REPLICAS = values.replicas === undefined ? undefined : int('replicas', 1, 16);
const DATABASE_URL = values['database-url'];
const SERVER_WORKERS = int('server-workers', 1, 64);
if (SERVER_WORKERS > 1 && REPLICAS !== undefined) usage('--server-workers is for the SQLite server (replicas are processes already)');
if (REPLICAS !== undefined && !DATABASE_URL) usage('--replicas needs --database-url (replicas share one PostgreSQL database)');
if (DATABASE_URL && REPLICAS === undefined) usage('--database-url goes with --replicas N (1: one process on PostgreSQL; N > 1: 1 and N in one run)');

/** One configuration of the server under test, measured with the same phases as any other. */
interface Configuration {
  label: string;
  replicas: number;
  engine: 'sqlite' | 'postgres';
}
const CONFIGURATIONS: Configuration[] =
  REPLICAS === undefined
    ? [{ label: SERVER_WORKERS > 1 ? `SQLite, ${SERVER_WORKERS} worker processes` : 'SQLite, one process', replicas: 1, engine: 'sqlite' }]
    : [
        { label: 'PostgreSQL, 1 replica', replicas: 1, engine: 'postgres' },
        ...(REPLICAS > 1 ? [{ label: `PostgreSQL, ${REPLICAS} replicas`, replicas: REPLICAS, engine: 'postgres' as const }] : []),
      ];
/** The robot (d) binds: with replicas, robot 1 (on replica 1 of N, so the change crosses replicas), else robot 0. */
const ONE_ROBOT_INDEX = Math.min(N - 1, REPLICAS !== undefined && REPLICAS > 1 ? 1 : 0);

const log = (m: string): void => void process.stderr.write(`fleet: ${m}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Node raises its own soft open-files limit to the hard limit when it starts (so do the server and the
 * workers): what counts is the hard limit. Stops with the remedy when it is too low for N sockets.
 */
function ensureFileLimit(): void {
  const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  if (!line) return;
  const soft = line[1] === 'unlimited' ? Infinity : Number(line[1]);
  const need = N + 1024;
  if (soft >= need) return;
  log(`${N} robots need about ${need} open files in the server, but this process may open ${soft}: raise the hard limit ` +
    `(as root \`ulimit -n ${need}\` in the shell that runs the benchmark, or LimitNOFILE= for a service) and run again`);
  process.exit(2);
}

function machine(): string {
  const cpu = os.cpus()[0]?.model.replace(/\s+/g, ' ').trim() ?? 'unknown CPU';
  return `${os.cpus().length} × ${cpu}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, Linux ${os.release()}`;
}

const uptime = (): string => spawnSync('uptime', [], { encoding: 'utf8' }).stdout?.trim() ?? `load ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`;

/** Server and client CPU (ms) spent while `work` runs. */
async function costed<T>(server: ServerUnderTest, pool: RobotPool, work: () => Promise<T>): Promise<{ value: T; serverCpuMs: number; clientCpuMs: number; wallMs: number; databaseCpuMs?: number }> {
  const db = backendCpu;
  const d0 = await db?.totalMs();
  const s0 = sumCpuMs(server.pids());
  const c0 = sumCpuMs(pool.pids());
  const t0 = Date.now();
  const value = await work();
  const serverCpuMs = sumCpuMs(server.pids()) - s0;
  const clientCpuMs = sumCpuMs(pool.pids()) - c0;
  const wallMs = Date.now() - t0;
  return { value, wallMs, serverCpuMs, clientCpuMs, ...(db && d0 !== undefined ? { databaseCpuMs: (await db.totalMs()) - d0 } : {}) };
}

/** Waits until every robot has a long poll in flight, twice in a row half a second apart. */
async function allWaiting(pool: RobotPool, expected: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let stable = 0;
  let last = 0;
  while (Date.now() < deadline) {
    last = (await pool.status()).waiting;
    stable = last >= expected ? stable + 1 : 0;
    if (stable >= 2) return last;
    await sleep(500);
  }
  return last;
}

/** On PostgreSQL: the CPU of the database's backends, counted beside the server's. */
let backendCpu: BackendCpu | undefined;

/** What the configuration being measured holds (servers, robots, nginx, database), for Ctrl-C. */
let cleanUpCurrent: (() => Promise<void>) | undefined;

async function main(): Promise<void> {
  ensureFileLimit();
  if (DATABASE_URL) {
    await checkDatabaseUrl(DATABASE_URL).catch((err: unknown) => {
      log((err as Error).message);
      process.exit(2);
    });
  }
  // Ctrl-C must not leave a server (or nginx, or a database) behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      void (cleanUpCurrent?.() ?? Promise.resolve()).finally(() => process.exit(130));
    });
  }
  log('building the server (tsc), so the benchmark runs what npm start runs');
  buildServer();
  const results: FleetResult[] = [];
  for (const [i, cfg] of CONFIGURATIONS.entries()) {
    if (i > 0) await sleep(5000); // the previous configuration's processes and sockets are gone
    const r = await measure(cfg);
    results.push(r);
    // Printed as soon as measured: a later configuration that fails does not lose this one.
    process.stdout.write(formatReport(r));
  }
  if (results.length === 2) process.stdout.write(formatComparison(results[0]!, results[1]!));
  if (values.json) {
    fs.writeFileSync(values.json, `${JSON.stringify(results.length === 1 ? results[0] : { configurations: results }, null, 2)}\n`);
    log(`wrote ${values.json}`);
  }
}

async function measure(cfg: Configuration): Promise<FleetResult> {
  const uptimeBefore = uptime();
  const ticksBefore = cpuTicks();
  const loadBefore = os.loadavg();
  const started = new Date();
  log(`[${cfg.label}] ${N} robots, arrivals over ${WINDOW_S} s, ${WORKERS} robot worker(s); ${uptimeBefore}`);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bench-fleet-'));
  let server: ServerUnderTest | undefined;
  let pool: RobotPool | undefined;
  let nginx: Nginx | undefined;
  let admin: FleetAdmin | undefined;
  let database: BenchDatabase | undefined;
  cleanUpCurrent = cleanUp;
  try {
    const cpuProfDir = values['cpu-prof'] && path.resolve(values['cpu-prof']);
    const nodeArgs = values['server-node-args']?.split(/\s+/).filter(Boolean);
    if (cfg.engine === 'sqlite') server = await startServerUnderTest({ workDir: work, cpuProfDir, workers: SERVER_WORKERS, nodeArgs });
    else {
      database = await createBenchDatabase(DATABASE_URL!, `fleet_${cfg.replicas}`);
      log(`[${cfg.label}] fresh database ${database.name}`);
      backendCpu = await BackendCpu.start(DATABASE_URL!, database.name);
      server = await startReplicas({ workDir: work, cpuProfDir, nodeArgs, replicas: cfg.replicas, databaseUrl: database.url, databasePassword: database.password });
    }
    const srv = server;
    const url = server.urls[0]!;
    log(`server under test at ${server.urls.join(', ')} (pid ${server.pids().join(', ')})`);
    const peak = new RssSampler(() => srv.pids());

    admin = await FleetAdmin.login(url, server.caPem, server.adminUser, server.adminPassword);
    await admin.setUp();
    const names = Array.from({ length: N }, (_, i) => `robot-${String(i).padStart(5, '0')}`);
    const enrollStart = Date.now();
    let created = 0;
    const tokens = await admin.createRobots(names, (d) => {
      created += d;
      if (created % 1000 === 0 || created === N) log(`created ${created}/${N} robots with enrollment tokens`);
    });
    let enrolledCount = 0;
    pool = new RobotPool(WORKERS, (d) => {
      enrolledCount += d;
      if (enrolledCount % 1000 === 0 || enrolledCount === N) log(`enrolled ${enrolledCount}/${N} robots`);
    }, cpuProfDir && path.join(cpuProfDir, 'robots'));
    const robots = pool;
    const enrolled = await pool.enroll(
      names.map((name, i) => ({ name, token: tokens[i]!, url: srv.urls[i % srv.urls.length]! })),
      server.caPem,
      POLL_WAIT_S,
      values.validate,
    );
    const enrollMs = Date.now() - enrollStart;
    if (enrolled.enrolled === 0) throw new Error(`no robot could enroll: ${JSON.stringify(enrolled.errors)}`);
    await sleep(2000);

    /**
     * Until every robot's report is in (those the server asked for on the next contact come a poll's wait
     * after the bundle, with the robot's next poll): costed on its own, with the errors the robots met meanwhile.
     */
    const reportTail = async (from: number): Promise<ReportTail> => {
      await robots.mark();
      const r = await costed(srv, robots, async () => {
        const until = Date.now() + (2 * POLL_WAIT_S + 15) * 1000; // a report refused (503) goes again on the contact after
        while ((await robots.status()).reportsPending > 0 && Date.now() < until) await sleep(250);
        return (await robots.status()).reportsPending;
      });
      const left = r.value;
      return {
        ...(left === 0 ? { inMs: Date.now() - from } : {}),
        left,
        errors: (await robots.collect(from, POLL_WAIT_S)).errors,
        serverCpuMs: r.serverCpuMs,
        clientCpuMs: r.clientCpuMs,
        wallMs: r.wallMs,
      };
    };
    const tailText = (t: ReportTail): string => (t.inMs === undefined ? `${t.left} reports not in` : `all reports in after ${(t.inMs / 1000).toFixed(1)} s`);

    const offsets = arrivals(N, WINDOW_S * 1000, SEED);
    const storm = async (kind: 'control' | 'boot' | 'boot-identity', what: string, pollAfterBoot = false): Promise<StormReport> => {
      log(`${what}: ${enrolled.enrolled} robots over ${WINDOW_S} s`);
      const startAt = Date.now() + 1000;
      const r = await costed(srv, robots, () => robots.storm(kind, startAt, offsets, GIVE_UP_S * 1000, pollAfterBoot));
      const res = r.value;
      const sum = summarize(res.served);
      log(
        `${what}: ${res.served.length} served, ${res.neverServed} never, in ${((Date.now() - startAt) / 1000).toFixed(1)} s ` +
          `(p50 ${Math.round(sum.p50)} ms, p99 ${Math.round(sum.p99)} ms, server CPU ${(r.serverCpuMs / Math.max(enrolled.enrolled, 1)).toFixed(2)} ms/robot)`,
      );
      const tail = pollAfterBoot ? await reportTail(startAt) : undefined;
      if (tail) log(`${what}: ${tailText(tail)}`);
      return {
        robots: enrolled.enrolled,
        ...(tail ? { reportTail: tail } : {}),
        served: summarize(res.served),
        neverServed: res.neverServed,
        attempts: res.attempts,
        longestAttemptMs: res.longestAttemptMs,
        startLag: summarize(res.startLagMs),
        errors: res.errors,
        serverCpuMs: r.serverCpuMs,
        clientCpuMs: r.clientCpuMs,
        wallMs: r.wallMs,
        ...(r.databaseCpuMs !== undefined ? { databaseCpuMs: r.databaseCpuMs } : {}),
      };
    };
    const control = await storm('control', 'control storm (fresh TLS + GET /health)');
    await sleep(3000);
    const idleKiB = sumRssKiB(srv.pids());
    // Booted robots long-poll at once, as the agent does (from the thousandth waiting, the server asks for their
    // reports on the next contact). Not before a per-robot storm, which boots the same robots again.
    const boot = await storm('boot', 'boot storm (fresh TLS + login + bundle)', !PER_ROBOT);
    let bootPerRobot: StormReport | undefined;
    if (PER_ROBOT) {
      // Enrollment and two storms of a large fleet can outlive the admin's token (15 min): log in afresh.
      const relogin = async (): Promise<FleetAdmin> => {
        admin!.close();
        admin = await FleetAdmin.login(url, srv.caPem, srv.adminUser, srv.adminPassword);
        return admin;
      };
      const perRobotAdmin = await relogin();
      for (const enclave of SHARED_ENCLAVES) await perRobotAdmin.setIdentityMode(enclave, 'per-robot');
      await sleep(3000);
      bootPerRobot = await storm('boot-identity', `per-robot boot storm (fresh TLS + login + bundle + ${SHARED_ENCLAVES.length} CSRs)`);
      // The fan-out below rotates a shared enclave.
      await relogin();
      for (const enclave of SHARED_ENCLAVES) await admin.setIdentityMode(enclave, 'shared');
      await sleep(3000);
    }

    log(`long polls: every robot waits (?wait=${POLL_WAIT_S})`);
    pool.startPolling(1000);
    let waiting = await allWaiting(pool, enrolled.enrolled, GIVE_UP_S * 1000);
    log(`${waiting} robots waiting`);
    await sleep(2000);
    const idleWait = await costed(srv, robots, () => sleep(3000));
    const waitingKiB = sumRssKiB(srv.pids());

    const fanout = async (
      what: string,
      change: () => Promise<unknown>,
      done: (changed: { name: string }[]) => boolean,
      settleMs: number,
      awaitReports = false,
    ): Promise<FanoutReport & { t0: number; changed: { name: string; at: number }[]; wokenNames: string[] }> => {
      await robots.mark();
      const probe = new HealthProbe(url, srv.caPem);
      await sleep(1000); // the probe's TLS handshake is not part of the fan-out
      const probeFrom = probe.latencies.length;
      log(`${what}`);
      const r = await costed(srv, robots, async () => {
        const t0 = Date.now();
        await change();
        const adminMs = Date.now() - t0;
        const deadline = t0 + GIVE_UP_S * 1000;
        let got = await robots.collect(t0, POLL_WAIT_S);
        while (!done(got.changed) && Date.now() < deadline) {
          await sleep(500);
          got = await robots.collect(t0, POLL_WAIT_S);
        }
        await sleep(settleMs);
        return { t0, adminMs, got: await robots.collect(t0, POLL_WAIT_S) };
      });
      await probe.stop();
      const { t0, adminMs, got } = r.value;
      // The reports the server asked for on the next contact come after the deliveries: their tail is costed on
      // its own (with the robots' next polls, answered 304 when their wait ran out).
      const tail = awaitReports ? await reportTail(t0) : undefined;
      log(`${what}: ${got.changed.length} robots got a new bundle; admin request ${adminMs} ms${tail ? `; ${tailText(tail)}` : ''}`);
      return {
        t0,
        adminMs,
        ...(tail ? { reportTail: tail } : {}),
        delivered: got.changed.length,
        expected: 0,
        woken: got.woken.length,
        latency: summarize(got.changed.map((c) => c.at - t0)),
        health: summarize(probe.latencies.slice(probeFrom)),
        healthErrors: probe.errors,
        errors: got.errors,
        serverCpuMs: r.serverCpuMs,
        clientCpuMs: r.clientCpuMs,
        wallMs: r.wallMs,
        ...(r.databaseCpuMs !== undefined ? { databaseCpuMs: r.databaseCpuMs } : {}),
        changed: got.changed,
        wokenNames: got.woken,
      };
    };

    // Robot i talks to replica i mod R: which replica each delivery went through, to show a change made on
    // replica 0 reaches robots waiting on every other one.
    const replicaOf = new Map(names.map((n, i) => [n, i % srv.urls.length]));
    const byReplica = (changed: { name: string; at: number }[], t0: number): ReplicaDelivery[] =>
      srv.urls.map((u, r) => {
        const mine = changed.filter((c) => replicaOf.get(c.name) === r);
        return { replica: r, url: u, robots: names.filter((_, i) => i % srv.urls.length === r).length, delivered: mine.length, latency: summarize(mine.map((c) => c.at - t0)) };
      });
    const expected = waiting;
    const rotate = await fanout(`rotating ${SHARED_ENCLAVES[0]} (bound to all ${expected} waiting robots)`, () => admin!.rotate(SHARED_ENCLAVES[0]!), (c) => c.length >= expected, 500, true);
    waiting = await allWaiting(pool, enrolled.enrolled, 60_000);
    const target = names[ONE_ROBOT_INDEX]!;
    const one = await fanout(
      `binding ${SOLO_ENCLAVE} to ${target} only (${waiting} robots waiting)`,
      () => admin!.bindOne(SOLO_ENCLAVE, target),
      (c) => c.some((x) => x.name === target),
      2000,
    );
    const oneReport = {
      ...one,
      target,
      targetReplica: ONE_ROBOT_INDEX % srv.urls.length,
      targetMs: ((at) => (at === undefined ? undefined : at - one.t0))(one.changed.find((c) => c.name === target)?.at),
      othersChanged: one.changed.filter((c) => c.name !== target).length,
      othersWoken: one.wokenNames.filter((n) => n !== target).length,
    };
    const robotToken = await pool.oneRobotToken();
    log('stopping the robots');
    await pool.stop();
    pool = undefined;

    let steady: FleetResult['steady'];
    // nginx, the ceiling, does not depend on the store: measured once, beside the first configuration.
    if (STEADY_S > 0) steady = await steadyState(srv, robotToken, cfg === CONFIGURATIONS[0], (n) => (nginx = n));
    const peakKiB = peak.stop();

    const result: FleetResult = {
      meta: {
        date: started.toISOString(),
        server: cfg.label,
        replicas: cfg.replicas,
        engine: cfg.engine,
        machine: machine(),
        node: process.version,
        robots: N,
        windowS: WINDOW_S,
        workers: WORKERS,
        pollWaitS: POLL_WAIT_S,
        giveUpS: GIVE_UP_S,
        validate: values.validate,
        seed: SEED,
        uptimeBefore,
        uptimeAfter: uptime(),
        loadBefore,
        loadAfter: os.loadavg(),
        steal: stealShare(ticksBefore, cpuTicks()),
      },
      enroll: { ms: enrollMs, enrolled: enrolled.enrolled, failed: enrolled.failed, errors: enrolled.errors },
      control,
      boot,
      ...(bootPerRobot ? { bootPerRobot } : {}),
      memory: {
        idleKiB,
        waitingKiB,
        waiting,
        perWaitingRobotKiB: waiting > 0 ? (waitingKiB - idleKiB) / waiting : Number.NaN,
        peakKiB,
        idleWaitServerCpuMs: idleWait.serverCpuMs,
        idleWaitDatabaseCpuMs: idleWait.databaseCpuMs,
        idleWaitMs: idleWait.wallMs,
      },
      rotate: { adminMs: rotate.adminMs, delivered: rotate.delivered, woken: rotate.woken, expected, reportTail: rotate.reportTail, byReplica: byReplica(rotate.changed, rotate.t0), latency: rotate.latency, health: rotate.health, healthErrors: rotate.healthErrors, errors: rotate.errors, serverCpuMs: rotate.serverCpuMs, clientCpuMs: rotate.clientCpuMs, wallMs: rotate.wallMs, databaseCpuMs: rotate.databaseCpuMs },
      one: {
        adminMs: oneReport.adminMs,
        target,
        targetReplica: oneReport.targetReplica,
        targetMs: oneReport.targetMs,
        othersChanged: oneReport.othersChanged,
        othersWoken: oneReport.othersWoken,
        waiting,
        health: one.health,
        healthErrors: one.healthErrors,
        errors: one.errors,
        serverCpuMs: one.serverCpuMs,
        clientCpuMs: one.clientCpuMs,
        wallMs: one.wallMs,
        databaseCpuMs: one.databaseCpuMs,
      },
      steady,
    };
    return result;
  } finally {
    await cleanUp();
    cleanUpCurrent = undefined;
  }

  async function cleanUp(): Promise<void> {
    admin?.close();
    await pool?.stop();
    await nginx?.stop();
    await server?.stop();
    await backendCpu?.stop();
    backendCpu = undefined;
    await database?.drop().catch((err: unknown) => log(`could not drop ${database!.name}: ${(err as Error).message}`));
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Keep-alive throughput against the server and against nginx serving the same bundle bytes. */
async function steadyState(server: ServerUnderTest, robot: { token: string; etag: string }, withNginx: boolean, started: (n: Nginx) => void): Promise<FleetResult['steady']> {
  const url = server.urls[0]!;
  const http = new HttpClient(url, server.caPem);
  const auth = { authorization: `Bearer ${robot.token}` };
  const bundle = await http.request({ method: 'GET', path: 'v1/robot/bundle', headers: auth, timeoutMs: 15_000, maxBytes: 64 * 1024 * 1024 });
  const notModified = await http.request({ method: 'GET', path: 'v1/robot/bundle', headers: { ...auth, 'if-none-match': String(bundle.headers.etag) }, timeoutMs: 15_000 });
  http.close();
  if (bundle.status !== 200 || notModified.status !== 304) throw new Error(`steady state: bundle ${bundle.status}, If-None-Match ${notModified.status} (expected 200, 304)`);
  const etag = String(bundle.headers.etag);

  const rows: NonNullable<FleetResult['steady']>['rows'] = [];
  const run = async (name: string, target: string, urls: string[], headers: Record<string, string>, pids: () => number[] = () => server.pids()): Promise<void> => {
    log(`steady state: ${name} against ${target} (${STEADY_S} s, ${CONNECTIONS} connections${urls.length > 1 ? ` spread over ${urls.length} replicas` : ''}, after 1 s of warm-up)`);
    // Warm-up: the connections' TLS handshakes and the JIT are not steady state.
    await loadAll(urls, headers, 1, CONNECTIONS);
    // CPU per answer as well as answers per second: a host that steals time from this VM lowers req/s, not the
    // CPU each answer takes.
    const cpuBefore = sumCpuMs(pids());
    const result = await loadAll(urls, headers, STEADY_S, CONNECTIONS);
    const answers = result.reqPerS * STEADY_S;
    rows.push({ name, target, ...result, cpuUsPerRequest: answers > 0 ? ((sumCpuMs(pids()) - cpuBefore) * 1000) / answers : undefined });
  };
  // Every replica at once (the robot's token is valid on each): the fleet's throughput behind a balancer.
  const on = (p: string): string[] => server.urls.map((u) => `${u}${p}`);
  await run('GET /health', 'server', on('/health'), {});
  await run('bundle → 200', 'server', on('/v1/robot/bundle'), auth);
  await run('bundle + If-None-Match → 304', 'server', on('/v1/robot/bundle'), { ...auth, 'If-None-Match': etag });

  if (!withNginx) return { bundleBytes: bundle.body.length, tool: haveWrk() ? 'wrk' : 'autocannon', rows };
  if (!fs.existsSync(NGINX)) {
    log(`${NGINX} not found: no nginx ceiling`);
    return { bundleBytes: bundle.body.length, tool: haveWrk() ? 'wrk' : 'autocannon', rows };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'enclave-bench-nginx-'));
  const nginx = await startNginx(dir, server.certFile, server.keyFile, { 'bundle.json': bundle.body });
  started(nginx);
  try {
    const probe = new HttpClient(nginx.url, server.caPem);
    const first = await probe.request({ method: 'GET', path: 'bundle.json', timeoutMs: 15_000, maxBytes: 64 * 1024 * 1024 });
    const nEtag = String(first.headers.etag);
    const second = await probe.request({ method: 'GET', path: 'bundle.json', headers: { 'if-none-match': nEtag }, timeoutMs: 15_000 });
    probe.close();
    if (first.status !== 200 || !first.body.equals(bundle.body) || second.status !== 304) throw new Error(`nginx: ${first.status}/${second.status}, same bytes: ${first.body.equals(bundle.body)}`);
    await run('bundle → 200', 'nginx', [`${nginx.url}/bundle.json`], {}, () => nginx.pids());
    await run('bundle + If-None-Match → 304', 'nginx', [`${nginx.url}/bundle.json`], { 'If-None-Match': nEtag }, () => nginx.pids());
  } finally {
    await nginx.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { bundleBytes: bundle.body.length, tool: haveWrk() ? 'wrk' : 'autocannon', rows };
}

main().catch((err: unknown) => {
  log(err instanceof Error ? err.stack ?? err.message : String(err));
  process.exitCode = 1;
});
