import type { RequestHandler } from 'express';
import type { Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import { ServiceUnavailable } from '../errors.js';

export interface OverloadOptions {
  /** Event-loop lag above which the server counts as saturated. 0 turns shedding off. */
  lagMs: number;
  /** How long it stays counted as saturated after the last late tick (so that it does not flap per request). */
  holdMs: number;
  /**
   * A connection whose TLS handshake completes this long after it was accepted waited in the server's queue
   * (or crossed a slow link). When most of a second's handshakes do, the server counts as saturated. 0: off.
   */
  queueMs: number;
}

export const DEFAULT_OVERLOAD: OverloadOptions = { lagMs: 250, holdMs: 1000, queueMs: 1000 };

/** Handshakes are judged a window at a time: fewer than this many in one say nothing about the queue. */
const QUEUE_WINDOW_MS = 1000;
const QUEUE_MIN_HANDSHAKES = 10;

const TICK_MS = 25;

/**
 * Measures how late a short repeating timer fires: when TLS handshakes, crypto and SQLite keep the one event
 * loop busy, every queued request waits at least that long. Two late ticks within `holdMs` mark the server
 * saturated until `holdMs` after the last one; a quiet tick does not clear it early.
 *
 * A storm of TLS handshakes hides from that timer: each handshake is a short task, so the loop keeps turning
 * while thousands of connections wait behind one another (it rarely fired in a 10,000-robot boot storm, where
 * robots waited 15 s and timed out). What they wait shows in how long after it was accepted a connection
 * finishes its handshake: `noteHandshake`. When at least half of a second's handshakes (10 or more) took longer
 * than `queueMs`, the server is saturated for `holdMs` more: a few robots on a slow link do not make it so.
 */
export class LoadMonitor {
  private expected: number;
  private lastLate = -Infinity;
  private worst = 0;
  private lateTicks = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private windowStart = -Infinity;
  private handshakes = 0;
  private slowHandshakes = 0;
  private slowest = 0;
  private queuedUntil = -Infinity;
  private queueWait = 0;

  constructor(
    private readonly opts: OverloadOptions = DEFAULT_OVERLOAD,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.expected = clock() + TICK_MS;
    if (opts.lagMs > 0) {
      this.timer = setInterval(() => this.tick(), TICK_MS);
      this.timer.unref();
    }
  }

  private tick(): void {
    const now = this.clock();
    const lag = now - this.expected;
    this.expected = now + TICK_MS;
    if (lag > this.opts.lagMs) {
      // A new episode starts from this tick; within one, the worst lag seen sets the back-off.
      if (now - this.lastLate >= this.opts.holdMs) {
        this.worst = 0;
        this.lateTicks = 0;
      }
      this.worst = Math.max(this.worst, lag);
      this.lateTicks++;
      this.lastLate = now;
    }
  }

  /** A fresh connection finished its TLS handshake `ms` after it was accepted. */
  noteHandshake(ms: number): void {
    if (this.opts.queueMs <= 0) return;
    const now = this.clock();
    if (now - this.windowStart >= QUEUE_WINDOW_MS) {
      this.windowStart = now;
      this.handshakes = 0;
      this.slowHandshakes = 0;
      this.slowest = 0;
    }
    this.handshakes++;
    if (ms > this.opts.queueMs) {
      this.slowHandshakes++;
      this.slowest = Math.max(this.slowest, ms);
    }
    if (this.handshakes >= QUEUE_MIN_HANDSHAKES && this.slowHandshakes * 2 >= this.handshakes) {
      this.queuedUntil = now + this.opts.holdMs;
      this.queueWait = this.slowest;
    }
  }

  /** How saturated the server is, in ms of delay (event-loop lag or handshake queueing), else 0. */
  lag(): number {
    const now = this.clock();
    // One late tick is one long task that is over (an import, a big batch); saturation keeps ticks late.
    const loop = this.lateTicks >= 2 && now - this.lastLate < this.opts.holdMs ? this.worst : 0;
    return Math.max(loop, now < this.queuedUntil ? this.queueWait : 0);
  }

  close(): void {
    clearInterval(this.timer);
  }
}

const ACCEPTED = Symbol('acceptedAt');

/**
 * Tells the monitor how long each fresh connection waited for its handshake: stamped when the TCP connection is
 * accepted (before any TLS work), read when the TLS socket is secure.
 */
export function watchHandshakes(server: TlsServer, monitor: LoadMonitor, clock: () => number = () => performance.now()): void {
  server.on('connection', (socket: Socket & { [ACCEPTED]?: number }) => {
    socket[ACCEPTED] = clock();
  });
  server.on('secureConnection', (tls: TLSSocket) => {
    // The TCP socket the TLS socket wraps (Node's own field, set for every socket a TLS server accepts).
    const accepted = (tls as TLSSocket & { _parent?: { [ACCEPTED]?: number } })._parent?.[ACCEPTED];
    if (accepted !== undefined) monitor.noteHandshake(clock() - accepted);
  });
}

/**
 * Seconds a shed client should wait: about as long as the server is behind (the loop's lag, or how long
 * connections wait for their handshake), spread at random over a range as wide again, so that ten thousand
 * robots refused in the same second come back over many seconds. Not longer: the work a boot storm brings
 * does not shrink by being put off, and robots sent away for longer than the backlog lasts leave the server
 * idle while they wait (in a 10,000-robot storm where shedding told robots 15–30 s, the last were served after
 * 50 s; in runs where it did not fire, after 23–33 s).
 */
export function retryAfterSeconds(lagMs: number, random: () => number = Math.random): number {
  const base = Math.min(15, Math.max(1, Math.ceil(lagMs / 1000)));
  return base + Math.floor(random() * (base + 1));
}

/**
 * Refuses new robot work (logins, enrollments, reports) with 503 + Retry-After while the server is
 * saturated, before any of its cost is paid: robots that already hold a token keep getting bundles and long
 * polls, admins and /health keep working, and the robots refused come back spread out instead of queueing for
 * a minute.
 */
export function shedWhenOverloaded(monitor: LoadMonitor): RequestHandler {
  return (req, _res, next) => {
    if (req.method !== 'POST' || !SHED.has(req.path)) return next();
    next(overloaded(monitor));
  };
}

/** The 503 to answer new robot work with while the server is saturated; undefined when it is not. */
export function overloaded(monitor: LoadMonitor): ServiceUnavailable | undefined {
  const lag = monitor.lag();
  if (lag === 0) return undefined;
  const wait = retryAfterSeconds(lag);
  return new ServiceUnavailable(`the server is busy; retry in ${wait} s`, wait);
}

const SHED = new Set(['/v1/auth/robot', '/v1/enroll', '/v1/robot/report']);
