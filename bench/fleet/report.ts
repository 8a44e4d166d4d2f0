/** The fleet benchmark's results: their shape (also the --json file) and the Markdown summary on stdout. */
import { tallyText, type Summary, type Tally } from './stats.js';
import type { LoadResult } from './steady.js';

interface Cost {
  serverCpuMs: number;
  clientCpuMs: number;
  wallMs: number;
  /** On PostgreSQL: CPU of the database's backends over the phase (not in serverCpuMs). */
  databaseCpuMs?: number;
}

export interface StormReport extends Cost {
  robots: number;
  /** Per robot: ms from its first attempt until served (retries included). */
  served: Summary;
  neverServed: number;
  attempts: number;
  longestAttemptMs: number;
  startLag: Summary;
  errors: Tally;
  /** The boot storm: its robots' reports, when the server asked for some on the next contact. */
  reportTail?: ReportTail;
}

/** A fan-out's deliveries through one replica (robot i talks to replica i mod R). */
export interface ReplicaDelivery {
  replica: number;
  url: string;
  /** Robots dealt to this replica. */
  robots: number;
  delivered: number;
  latency: Summary;
}

/** After a phase, until every robot's report is in; `inMs` from the phase's start, absent when some never came. */
export interface ReportTail extends Cost {
  inMs?: number;
  left?: number;
  errors?: Tally;
}

export interface FanoutReport extends Cost {
  adminMs: number;
  delivered: number;
  expected: number;
  /** Per replica (one entry without replicas); absent in results from before replicas existed. */
  byReplica?: ReplicaDelivery[];
  /** Robots answered before their poll's wait ran out (the same detector as (d)'s "woken"; should equal `delivered`). */
  woken: number;
  /** ms from sending the change to each robot receiving its new bundle. */
  latency: Summary;
  /**
   * After the deliveries, until every robot's report is in (the rotation): the reports the server asked for on
   * the next contact, with the robots' next polls. `inMs` from the change; undefined when some never came.
   */
  reportTail?: ReportTail;
  /** GET /health over a warm keep-alive connection during the fan-out. */
  health: Summary;
  healthErrors: Tally;
  errors: Tally;
}

export interface OneRobotReport extends Cost {
  adminMs: number;
  target: string;
  /** The replica the target robot talks to (the change is made on replica 0). */
  targetReplica?: number;
  targetMs: number | undefined;
  /** Other robots that received a changed bundle (should be 0). */
  othersChanged: number;
  /** Other robots whose long poll was answered before its wait ran out (should be 0). */
  othersWoken: number;
  waiting: number;
  health: Summary;
  healthErrors: Tally;
  errors: Tally;
}

export interface FleetResult {
  meta: {
    date: string;
    /** What was measured, e.g. "SQLite, one process", "PostgreSQL, 2 replicas". */
    server?: string;
    replicas?: number;
    engine?: 'sqlite' | 'postgres';
    machine: string;
    node: string;
    robots: number;
    windowS: number;
    workers: number;
    pollWaitS: number;
    giveUpS: number;
    validate: boolean;
    seed: number;
    uptimeBefore: string;
    uptimeAfter: string;
    loadBefore: number[];
    loadAfter: number[];
    /** Share of the CPU time the VM's host took for others over the run (`steal` in /proc/stat). */
    steal?: number;
  };
  enroll: { ms: number; enrolled: number; failed: number; errors: Tally };
  control: StormReport;
  boot: StormReport;
  /** With --identity per-robot: the same arrivals, both enclaves per-robot, one CSR each. */
  bootPerRobot?: StormReport;
  memory: {
    /** Server RSS after the control storm, before any robot logged in. */
    idleKiB: number;
    /** Server RSS with `waiting` robots holding a long poll. */
    waitingKiB: number;
    waiting: number;
    perWaitingRobotKiB: number;
    peakKiB: number;
    idleWaitServerCpuMs: number;
    idleWaitDatabaseCpuMs?: number;
    idleWaitMs: number;
  };
  rotate: FanoutReport;
  one: OneRobotReport;
  steady?: { bundleBytes: number; tool: string; rows: (LoadResult & { name: string; target: string })[] };
}

const ms = (v: number | undefined): string => (v === undefined || Number.isNaN(v) ? '–' : v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
const x = (a: number, b: number): string => (b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : '–');
const mib = (kib: number): string => `${(kib / 1024).toFixed(0)} MiB`;

export function formatReport(r: FleetResult): string {
  const m = r.meta;
  const n = r.enroll.enrolled;
  const perRobot = (c: Cost, count = n): number => c.serverCpuMs / Math.max(count, 1);
  const clientPerRobot = (c: Cost, count = n): number => c.clientCpuMs / Math.max(count, 1);
  const tailNote = (t: ReportTail, from: string, after: string, count: number): string =>
    `${t.inMs === undefined ? `${t.left ?? 'some'} of their reports were not in when the benchmark stopped waiting` : `their reports were all in ${(t.inMs / 1000).toFixed(1)} s after ${from}`}, ` +
    `the ${(t.wallMs / 1000).toFixed(1)} s after ${after} (reports asked for on the next contact, and the robots' next polls) costing the server ` +
    `${perRobot(t, count).toFixed(2)} ms/robot and the robots ${clientPerRobot(t, count).toFixed(2)}, errors meanwhile: ${tallyText(t.errors ?? {})}.`;
  const storm = (name: string, s: StormReport): string =>
    `| ${name} | ${s.served.count}/${s.robots} | ${ms(s.served.p50)} | ${ms(s.served.p99)} | ${ms(s.served.max)} | ${s.neverServed} | ` +
    `${s.attempts} | ${ms(s.longestAttemptMs)} | ${tallyText(s.errors)} | ${perRobot(s).toFixed(2)} | ${x(perRobot(s), perRobot(r.control))} | ${clientPerRobot(s).toFixed(2)} |`;
  const lines = [
    `## Fleet run: ${m.robots} robots, arrivals over ${m.windowS} s${m.server ? ` — ${m.server}` : ''}`,
    '',
    `- ${m.date}; ${m.machine}; Node ${m.node}; ${m.workers} robot worker process(es); poll wait ${m.pollWaitS} s; give up after ${m.giveUpS} s` +
      `${m.validate ? '; robots check bundles with parseBundle' : ''}.`,
    `- before: \`${m.uptimeBefore}\``,
    `- after:  \`${m.uptimeAfter}\`${m.steal === undefined ? '' : `; CPU time stolen by the host over the run: ${(m.steal * 100).toFixed(1)}%`}`,
    `- enrolled ${r.enroll.enrolled}/${m.robots} in ${(r.enroll.ms / 1000).toFixed(1)} s${r.enroll.failed ? ` (${r.enroll.failed} failed: ${tallyText(r.enroll.errors)})` : ''}.`,
    '',
    '| storm (same arrivals) | served | p50 | p99 | max | never served | attempts | longest attempt | errors (attempts) | server CPU ms/robot | × control | client CPU ms/robot |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|',
    storm('(a) control: fresh TLS + GET /health', r.control),
    storm('(b) boot: fresh TLS + login + bundle', r.boot),
    ...(r.bootPerRobot ? [storm("(b') per-robot boot: fresh TLS + login + bundle + a CSR per enclave", r.bootPerRobot)] : []),
    '',
    `Time-to-served ratios, boot ÷ control: p50 ${x(r.boot.served.p50, r.control.served.p50)}, p99 ${x(r.boot.served.p99, r.control.served.p99)}. ` +
      `Client start lag (robot late against its arrival time; high = the client machine lagged): control p99 ${ms(r.control.startLag.p99)}, boot p99 ${ms(r.boot.startLag.p99)}.` +
      (r.bootPerRobot
        ? ` Per-robot ÷ shared boot: p50 ${x(r.bootPerRobot.served.p50, r.boot.served.p50)}, p99 ${x(r.bootPerRobot.served.p99, r.boot.served.p99)}, server CPU per robot ${x(perRobot(r.bootPerRobot), perRobot(r.boot))}.`
        : '') +
      (r.boot.reportTail ? ` Booted robots long-polled at once; ${tailNote(r.boot.reportTail, 'the storm began', 'the storm', r.boot.robots)}` : ''),
    '',
    '| change while robots long-poll | reached | p50 | p99 | max | admin request | /health meanwhile p50 / p99 / max | errors | server CPU ms/robot | client CPU ms/robot |',
    '|---|---:|---:|---:|---:|---:|---|---|---:|---:|',
    `| (c) rotate an enclave bound to all | ${r.rotate.delivered}/${r.rotate.expected} | ${ms(r.rotate.latency.p50)} | ${ms(r.rotate.latency.p99)} | ${ms(r.rotate.latency.max)} | ` +
      `${ms(r.rotate.adminMs)} | ${ms(r.rotate.health.p50)} / ${ms(r.rotate.health.p99)} / ${ms(r.rotate.health.max)}${healthErr(r.rotate.healthErrors)} | ${tallyText(r.rotate.errors)} | ` +
      `${perRobot(r.rotate, r.rotate.expected).toFixed(2)} | ${clientPerRobot(r.rotate, r.rotate.expected).toFixed(2)} |`,
    `| (d) bind an enclave to one robot | ${r.one.targetMs === undefined ? 0 : 1}/1 | ${ms(r.one.targetMs)} | | | ${ms(r.one.adminMs)} | ` +
      `${ms(r.one.health.p50)} / ${ms(r.one.health.p99)} / ${ms(r.one.health.max)}${healthErr(r.one.healthErrors)} | ${tallyText(r.one.errors)} | | |`,
    '',
    `(c) ÷ control p99: ${x(r.rotate.latency.p99, r.control.served.p99)}; ${r.rotate.woken} robots were answered before their poll's wait ran out` +
      (r.rotate.reportTail ? `; ${tailNote(r.rotate.reportTail, 'the change', 'the deliveries', r.rotate.expected)}` : '.') +
      (r.rotate.byReplica && r.rotate.byReplica.length > 1
        ? ` Rotated on replica 0; delivered per replica: ${r.rotate.byReplica.map((b) => `replica ${b.replica} ${b.delivered}/${b.robots} (p50 ${ms(b.latency.p50)}, p99 ${ms(b.latency.p99)})`).join(', ')}.`
        : '') +
      ` (d)${r.one.targetReplica ? ` (made on replica 0, ${r.one.target} waits on replica ${r.one.targetReplica})` : ''}: of ${r.one.waiting - 1} other waiting robots, ${r.one.othersWoken} were woken early and ${r.one.othersChanged} got a new bundle; ` +
      `server CPU over that phase (${(r.one.wallMs / 1000).toFixed(1)} s, the other robots' routine re-polls included) ${Math.round(r.one.serverCpuMs)} ms.`,
    '',
    ...(r.control.databaseCpuMs !== undefined
      ? [
          `PostgreSQL backends of this run's database (same machine, same cores; not in the server columns above), CPU ms/robot: ` +
            `(a) ${dbPerRobot(r.control, n)}, (b) ${dbPerRobot(r.boot, n)}${r.bootPerRobot ? `, (b') ${dbPerRobot(r.bootPerRobot, n)}` : ''}, (c) ${dbPerRobot(r.rotate, r.rotate.expected)}; ` +
            `(d) ${Math.round(r.one.databaseCpuMs ?? 0)} ms over the phase. Server + PostgreSQL per boot: ${((r.boot.serverCpuMs + (r.boot.databaseCpuMs ?? 0)) / Math.max(n, 1)).toFixed(2)} ms.`,
          '',
        ]
      : []),
    `Server memory: ${mib(r.memory.idleKiB)} before the boot storm, ${mib(r.memory.waitingKiB)} with ${r.memory.waiting} robots waiting ` +
      `(${r.memory.perWaitingRobotKiB.toFixed(1)} KiB per waiting robot), peak ${mib(r.memory.peakKiB)}. ` +
      `CPU while they all waited and nothing changed: ${Math.round(r.memory.idleWaitServerCpuMs)} ms over ${(r.memory.idleWaitMs / 1000).toFixed(1)} s.`,
    '',
  ];
  if (r.steady) {
    const nginx = (name: string): LoadResult | undefined => r.steady!.rows.find((row) => row.target === 'nginx' && row.name === name);
    const us = (v: number | undefined): string => (v === undefined ? '' : String(Math.round(v)));
    lines.push(
      `Steady state (${r.steady.tool}, keep-alive; bundle ${r.steady.bundleBytes} bytes):`,
      '',
      '| what | target | req/s | p50 | p99 | bad answers | × nginx (same request) | CPU µs/answer | nginx\'s CPU ÷ this |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|',
      ...r.steady.rows.map((row) => {
        const ceiling = row.target === 'server' ? nginx(row.name) : undefined;
        const cpuRatio = ceiling?.cpuUsPerRequest && row.cpuUsPerRequest ? x(ceiling.cpuUsPerRequest, row.cpuUsPerRequest) : '';
        return `| ${row.name} | ${row.target} | ${Math.round(row.reqPerS)} | ${ms(row.latencyP50Ms)} | ${ms(row.latencyP99Ms)} | ${row.bad} | ${ceiling ? x(row.reqPerS, ceiling.reqPerS) : ''} | ${us(row.cpuUsPerRequest)} | ${cpuRatio} |`;
      }),
      '',
    );
  }
  return `${lines.join('\n')}\n`;
}

function dbPerRobot(c: Cost, count: number): string {
  return c.databaseCpuMs === undefined ? '–' : (c.databaseCpuMs / Math.max(count, 1)).toFixed(2);
}

function healthErr(t: Tally): string {
  const text = tallyText(t);
  return text === 'none' ? '' : ` (failed: ${text})`;
}

/**
 * Two configurations of one run side by side (e.g. PostgreSQL with 1 replica and with N): each figure of the
 * second ÷ the same figure of the first, next to each one's own ratio against its control storm.
 */
export function formatComparison(one: FleetResult, many: FleetResult): string {
  const a = one.meta.server ?? 'first';
  const b = many.meta.server ?? 'second';
  const cpu = (c: Cost, count: number): number => c.serverCpuMs / Math.max(count, 1);
  const row = (what: string, va: number | undefined, vb: number | undefined, fmt: (v: number | undefined) => string): string =>
    `| ${what} | ${fmt(va)} | ${fmt(vb)} | ${va !== undefined && vb !== undefined ? x(vb, va) : '–'} |`;
  const db = (c: Cost, count: number): number | undefined => (c.databaseCpuMs === undefined ? undefined : c.databaseCpuMs / Math.max(count, 1));
  const f2 = (v: number | undefined): string => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(2));
  const count = (v: number | undefined): string => (v === undefined ? '–' : String(v));
  const rps = (r: FleetResult, name: string): number | undefined => r.steady?.rows.find((row) => row.target === 'server' && row.name === name)?.reqPerS;
  const na = one.enroll.enrolled;
  const nb = many.enroll.enrolled;
  const lines = [
    `## ${b} ÷ ${a} (same run, same robots and arrivals, a fresh database each)`,
    '',
    `| figure | ${a} | ${b} | ÷ |`,
    '|---|---:|---:|---:|',
    row('(a) control: server CPU ms/robot', cpu(one.control, na), cpu(many.control, nb), f2),
    row('(a) control: p50', one.control.served.p50, many.control.served.p50, ms),
    row('(a) control: p99', one.control.served.p99, many.control.served.p99, ms),
    row('(b) boot: served', one.boot.served.count, many.boot.served.count, count),
    row('(b) boot: server CPU ms/robot (summed over replicas)', cpu(one.boot, na), cpu(many.boot, nb), f2),
    row('(b) boot: PostgreSQL backends CPU ms/robot', db(one.boot, na), db(many.boot, nb), f2),
    row('(b) boot: server + PostgreSQL CPU ms/robot', cpu(one.boot, na) + (db(one.boot, na) ?? 0), cpu(many.boot, nb) + (db(many.boot, nb) ?? 0), f2),
    row('(b) boot: server CPU ÷ control', cpu(one.boot, na) / cpu(one.control, na), cpu(many.boot, nb) / cpu(many.control, nb), f2),
    row('(b) boot: p50', one.boot.served.p50, many.boot.served.p50, ms),
    row('(b) boot: p99', one.boot.served.p99, many.boot.served.p99, ms),
    row('(b) boot: p99 ÷ control p99', one.boot.served.p99 / one.control.served.p99, many.boot.served.p99 / many.control.served.p99, f2),
    row('(c) fan-out: delivered', one.rotate.delivered, many.rotate.delivered, count),
    row('(c) fan-out: p50', one.rotate.latency.p50, many.rotate.latency.p50, ms),
    row('(c) fan-out: p99', one.rotate.latency.p99, many.rotate.latency.p99, ms),
    row('(c) fan-out: admin request', one.rotate.adminMs, many.rotate.adminMs, ms),
    row('(c) fan-out: server CPU ms/robot', cpu(one.rotate, one.rotate.expected), cpu(many.rotate, many.rotate.expected), f2),
    row('(c) fan-out: PostgreSQL backends CPU ms/robot', db(one.rotate, one.rotate.expected), db(many.rotate, many.rotate.expected), f2),
    row('(c) fan-out: delivered through replicas other than 0', 0, many.rotate.byReplica?.slice(1).reduce((s, b) => s + b.delivered, 0), count),
    row('(d) one robot: its latency', one.one.targetMs, many.one.targetMs, ms),
    row('(d) one robot: others woken', one.one.othersWoken, many.one.othersWoken, count),
    row('server RSS with all robots waiting, MiB (summed)', one.memory.waitingKiB / 1024, many.memory.waitingKiB / 1024, (v) => (v === undefined ? '–' : v.toFixed(0))),
    row('server peak RSS, MiB (summed)', one.memory.peakKiB / 1024, many.memory.peakKiB / 1024, (v) => (v === undefined ? '–' : v.toFixed(0))),
  ];
  for (const name of ['GET /health', 'bundle → 200', 'bundle + If-None-Match → 304']) {
    const va = rps(one, name);
    const vb = rps(many, name);
    if (va !== undefined || vb !== undefined) lines.push(row(`steady state: ${name}, req/s (all replicas at once)`, va, vb, (v) => (v === undefined ? '–' : String(Math.round(v)))));
  }
  lines.push(
    '',
    `Load average before / after: ${a} ${one.meta.loadBefore.map((l) => l.toFixed(2)).join(' ')} / ${one.meta.loadAfter.map((l) => l.toFixed(2)).join(' ')}; ` +
      `${b} ${many.meta.loadBefore.map((l) => l.toFixed(2)).join(' ')} / ${many.meta.loadAfter.map((l) => l.toFixed(2)).join(' ')}.`,
    '',
  );
  return `${lines.join('\n')}\n`;
}
