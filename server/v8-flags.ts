/**
 * V8 flags every serving process runs with: `npm start`, the Docker image's command, each `--workers` child
 * and the fleet benchmark's server (a test keeps the first two in step with this list).
 *
 * `--max-semi-space-size=64`: V8's young generation holds up to 2 × 16 MiB by default. A fleet's requests each
 * leave a few KiB of short-lived objects (parsed headers, request and response objects, promises), and with a
 * few thousand robots' state in the old generation every scavenge of a small young generation costs more: in
 * a profile of `304`s after a 1,000-robot boot, scavenges and the malloc behind them were a tenth of the CPU,
 * against 2% after a 1-robot one. With 64 MiB semispaces a `304` cost 51–67 µs of CPU instead of 76–99, and
 * the server's resident memory grew by 40–90 MiB (docs/benchmarks.md).
 */
export const SERVER_V8_FLAGS: readonly string[] = ['--max-semi-space-size=64'];

/** `execArgv` with each of SERVER_V8_FLAGS the process was not already given (one given differently stays). */
export function withServerFlags(execArgv: readonly string[]): string[] {
  const nameOf = (flag: string): string => flag.split('=')[0]!.replace(/_/g, '-');
  const given = new Set(execArgv.map(nameOf));
  return [...execArgv, ...SERVER_V8_FLAGS.filter((f) => !given.has(nameOf(f)))];
}
