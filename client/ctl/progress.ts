/**
 * A progress bar on stderr, so stdout stays clean for data and scripts. On a terminal it redraws one
 * line; when forced with `--progress` onto a pipe or file it prints a line every 10 % instead, because
 * carriage returns make logs unreadable.
 */
export interface ProgressOptions {
  label: string;
  total?: number;
  /** `bytes` renders as KiB/MiB; `count` as plain numbers followed by `unit`. */
  kind: 'bytes' | 'count';
  unit?: string;
  enabled: boolean;
  stream?: NodeJS.WriteStream;
}

const WIDTH = 30;

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export class Progress {
  private total: number | undefined;
  private done = 0;
  private lastStep = -1;
  private lastDraw = 0;
  private drawn = false;
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;

  constructor(private readonly opts: ProgressOptions) {
    this.total = opts.total;
    this.stream = opts.stream ?? process.stderr;
    this.tty = this.stream.isTTY === true;
  }

  /** Whether to show progress: asked for with `--progress`, or stderr is a terminal (unless `--no-progress`). */
  static wanted(flag: boolean | undefined): boolean {
    return flag ?? process.stderr.isTTY === true;
  }

  setTotal(total: number): void {
    this.total = total;
  }

  update(done: number): void {
    this.done = done;
    if (!this.opts.enabled) return;
    if (this.tty) {
      const now = Date.now();
      // Redrawing on every 64 KiB chunk would cost more than the upload on a fast link.
      if (now - this.lastDraw < 80 && done !== this.total) return;
      this.lastDraw = now;
      this.stream.write(`\r\x1b[2K${this.line()}`);
      this.drawn = true;
      return;
    }
    const step = this.total ? Math.floor((done / this.total) * 10) : Math.floor(Math.log2(Math.max(done, 1)));
    if (step !== this.lastStep) {
      this.lastStep = step;
      this.stream.write(`${this.line()}\n`);
    }
  }

  /** Ends the bar (a newline on a terminal) so whatever comes next starts on a fresh line. */
  finish(): void {
    if (!this.opts.enabled) return;
    if (this.tty) {
      if (this.drawn) this.stream.write(`\r\x1b[2K${this.line()}\n`);
    } else if (this.total !== undefined && this.lastStep !== 10 && this.done === this.total) {
      this.stream.write(`${this.line()}\n`);
    }
  }

  private amount(n: number): string {
    return this.opts.kind === 'bytes' ? bytes(n) : `${n}`;
  }

  private line(): string {
    const unit = this.opts.unit ? ` ${this.opts.unit}` : '';
    if (!this.total) return `${this.opts.label} ${this.amount(this.done)}${unit}`;
    const ratio = Math.min(1, this.done / this.total);
    const filled = Math.round(ratio * WIDTH);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(WIDTH - filled)}]`;
    return `${this.opts.label} ${bar} ${String(Math.floor(ratio * 100)).padStart(3)}% ${this.amount(this.done)}/${this.amount(this.total)}${unit}`;
  }
}
