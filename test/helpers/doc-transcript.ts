/**
 * Console transcripts in Markdown: every ```console block is a sequence of `$ command` lines, each followed
 * by what it printed (stderr first, then stdout) and, when it failed, a last line `[exit N]`. Tests replay
 * them for real; `normalize` hides what differs between two honest runs (times, serials, IDs, sizes).
 */

export interface Step {
  /** The command as the document shows it (without `$ `). */
  command: string;
  /** Text after ` # ` on the command line, if any. */
  comment?: string;
  /** Output lines the document shows, `[exit N]` and trailing blank lines left out. */
  expected: string[];
  exit: number;
  /** 0-based line numbers in the document: the command, and the output lines [outStart, outEnd). */
  line: number;
  outStart: number;
  outEnd: number;
}

const EXIT = /^\[exit (\d+)\]$/;

export function parseTranscripts(markdown: string): Step[] {
  const lines = markdown.split('\n');
  const steps: Step[] = [];
  let inConsole = false;
  let current: Step | undefined;
  const finish = (end: number): void => {
    if (!current) return;
    let last = end;
    while (last > current.outStart && lines[last - 1]!.trim() === '') last--;
    const exit = last > current.outStart ? EXIT.exec(lines[last - 1]!.trim()) : null;
    current.outEnd = last;
    current.expected = lines.slice(current.outStart, exit ? last - 1 : last);
    current.exit = exit ? Number(exit[1]) : 0;
    steps.push(current);
    current = undefined;
  };
  lines.forEach((text, i) => {
    if (!inConsole) {
      inConsole = text.trim() === '```console';
      return;
    }
    if (text.trim() === '```') {
      finish(i);
      inConsole = false;
    } else if (text.startsWith('$ ')) {
      finish(i);
      const m = /^(.*?)\s+#\s+(.*)$/.exec(text.slice(2));
      current = { command: (m ? m[1]! : text.slice(2)).trim(), comment: m?.[2], expected: [], exit: 0, line: i, outStart: i + 1, outEnd: i + 1 };
    }
  });
  return steps;
}

/** IDs the server makes up (`g_…` grants, `b_…` bindings), in order of appearance. */
export const idsIn = (text: string): string[] => text.match(/\b[gb]_[A-Za-z0-9_-]{12}(?![A-Za-z0-9_-])/g) ?? [];

/** Replaces what legitimately differs between runs with placeholders, and trims line ends. */
export function normalize(text: string): string {
  return text
    .replace(/\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?Z/g, '<time>')
    .replace(/\b(?:[0-9A-F]{2}:){31}[0-9A-F]{2}\b/g, '<sha256>')
    .replace(/\b[0-9A-F]{40}\b/g, '<serial>')
    .replace(/\b[0-9a-f]{64}\b/g, '<hash>')
    .replace(/\b([gb])_[A-Za-z0-9_-]{12}(?![A-Za-z0-9_-])/g, '$1_<id>')
    .replace(/\bet_[A-Za-z0-9_-]+/g, 'et_<token>')
    .replace(/\(\d+ bytes\)/g, '(<n> bytes)')
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .trim();
}

/** The document with each step's command line and output replaced (steps as returned by parseTranscripts). */
export function rewrite(markdown: string, steps: Step[], actual: Map<Step, { command: string; output: string[]; exit: number }>): string {
  const lines = markdown.split('\n');
  for (const step of [...steps].reverse()) {
    const a = actual.get(step);
    if (!a) continue;
    const output = [...a.output, ...(a.exit !== 0 ? [`[exit ${a.exit}]`] : [])];
    lines.splice(step.outStart, step.outEnd - step.outStart, ...output);
    lines[step.line] = lines[step.line]!.replace(step.command, () => a.command);
  }
  return lines.join('\n');
}
