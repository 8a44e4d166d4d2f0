/**
 * A real sd_notify receiver: a unix datagram socket bound by python3 (Node cannot bind one), printing one JSON
 * line per datagram with the sender PID from SCM_CREDENTIALS and whether a watched file existed when the
 * datagram arrived. Passed file descriptors (systemd-notify's BARRIER=1) are closed, as systemd does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const RECEIVER = `
import json, os, socket, struct, sys, time
path, watch = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(path)
print(json.dumps({"bound": True}), flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64 * 4))
    exists = bool(watch) and os.path.exists(watch)
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iii", payload[:12])[0]
        elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for i in range(len(payload) // 4):
                os.close(struct.unpack("i", payload[i * 4:i * 4 + 4])[0])
    fields = dict(l.split("=", 1) for l in data.decode().split("\\n") if "=" in l)
    print(json.dumps({"pid": pid, "fields": fields, "fileExists": exists, "t": time.time()}), flush=True)
`;

export interface NotifyMessage {
  pid: number | null;
  fields: Record<string, string>;
  fileExists: boolean;
  t: number;
}

export class NotifyReceiver {
  readonly messages: NotifyMessage[] = [];
  private constructor(
    readonly socketPath: string,
    private readonly proc: ChildProcess,
  ) {}

  /** Binds `<dir>/notify.sock`; `watchFile` is checked for existence when each datagram arrives. */
  static async start(dir: string, watchFile = ''): Promise<NotifyReceiver> {
    const socketPath = join(dir, 'notify.sock');
    const proc = spawn('python3', ['-c', RECEIVER, socketPath, watchFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    const r = new NotifyReceiver(socketPath, proc);
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      proc.once('error', reject);
      proc.stdout!.on('data', (d: Buffer) => {
        buf += d.toString();
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, nl)) as NotifyMessage & { bound?: boolean };
          buf = buf.slice(nl + 1);
          if (line.bound) resolve();
          else r.messages.push(line);
        }
      });
    });
    return r;
  }

  find(field: string, value?: string): NotifyMessage | undefined {
    return this.messages.find((m) => m.fields[field] !== undefined && (value === undefined || m.fields[field] === value));
  }

  stop(): void {
    this.proc.kill();
  }
}
