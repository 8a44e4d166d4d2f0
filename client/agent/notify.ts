/**
 * sd_notify(3) for Node, which cannot open unix datagram sockets.
 *
 * We spawn `systemd-notify VAR=VALUE...` (shipped with systemd wherever NOTIFY_SOCKET exists). It sends the
 * datagram with SCM_CREDENTIALS naming its parent, i.e. this agent, as the sender: as root that is allowed,
 * so systemd attributes READY=1 to the service's main PID even with the default NotifyAccess=main. When it
 * cannot (the agent runs as an unprivileged User=), libsystemd falls back to its own PID, which the unit
 * accepts through NotifyAccess=all; systemd-notify then waits (BARRIER=1) until systemd has read the message,
 * so the short-lived sender cannot vanish before systemd looked it up. If systemd-notify is not installed,
 * a python3 one-liner sends the datagram instead.
 *
 * Nothing happens without NOTIFY_SOCKET, and nothing here ever throws or delays the agent: the child runs in
 * the background, is killed after a few seconds, and every failure is only logged (once).
 */
import { spawn } from 'node:child_process';
import type { Logger } from './log.js';

const SEND_TIMEOUT_MS = 5000;

const PYTHON_SENDER = [
  'import os, socket, sys',
  'a = os.environ["NOTIFY_SOCKET"]',
  'a = "\\0" + a[1:] if a.startswith("@") else a',
  's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
  's.connect(a)',
  's.sendall("\\n".join(sys.argv[1:]).encode())',
].join('\n');

/**
 * Loggers already told that systemd could not be notified: once each (the agent has one). A call without a
 * logger logs nothing, so its failure must not use up the warning of a later call that has one.
 */
const warned = new WeakSet<Logger>();

/** Sends `VAR=VALUE` assignments (READY=1, STATUS=..., STOPPING=1) to systemd, if it is listening. */
export function sdNotify(fields: Record<string, string>, log?: Logger): void {
  if (!process.env.NOTIFY_SOCKET) return;
  const args = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/[\r\n]+/g, ' ')}`);
  try {
    send('systemd-notify', args, (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return report(err, log);
      send('python3', ['-c', PYTHON_SENDER, ...args], (err2) => report(err2, log));
    });
  } catch (err) {
    report(err, log);
  }
}

function report(err: unknown, log?: Logger): void {
  if (!log || warned.has(log)) return;
  warned.add(log);
  log.warn(`could not notify systemd: ${err instanceof Error ? err.message : String(err)}`);
}

function send(cmd: string, args: string[], onError: (err: Error) => void): void {
  const child = spawn(cmd, args, { stdio: 'ignore', env: process.env });
  const timer = setTimeout(() => child.kill('SIGKILL'), SEND_TIMEOUT_MS);
  timer.unref();
  child.once('error', (err) => {
    clearTimeout(timer);
    onError(err);
  });
  child.once('exit', (code, signal) => {
    clearTimeout(timer);
    if (code !== 0) onError(new Error(`${cmd} exited with ${signal ?? code}`));
  });
  child.unref();
}
