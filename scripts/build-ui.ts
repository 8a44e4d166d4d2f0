/**
 * Bundles the web console (ui/) into dist/ui: one script and one stylesheet named by their content hash, and
 * an index.html naming them (no inline script or style: the console's CSP forbids both). Run by `npm run
 * build` (into dist/ui, or the folder given as the first argument: package:server builds into its release);
 * test/console.test.ts calls `buildUi()` itself so a fresh clone's tests never serve a stale bundle.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const UI_OUT = path.join(REPO, 'dist/ui');

export interface UiBuild {
  outDir: string;
  files: { name: string; bytes: number; gzipBytes: number }[];
  gzipBytes: number;
}

export async function buildUi(outDir = UI_OUT): Promise<UiBuild> {
  const assets = path.join(outDir, 'assets');
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(assets, { recursive: true });
  const result = await esbuild.build({
    entryPoints: { app: path.join(REPO, 'ui/src/main.tsx') },
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: assets,
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    legalComments: 'none',
    tsconfig: path.join(REPO, 'ui/tsconfig.json'),
    logLevel: 'warning',
  });
  const outputs = Object.keys(result.metafile.outputs).map((f) => path.basename(f));
  const js = outputs.find((f) => f.endsWith('.js'));
  const css = outputs.find((f) => f.endsWith('.css'));
  if (!js || !css) throw new Error(`esbuild made ${outputs.join(', ')}: expected one .js and one .css`);
  const page = fs
    .readFileSync(path.join(REPO, 'ui/index.html'), 'utf8')
    .replace('%APP_JS%', `assets/${js}`)
    .replace('%APP_CSS%', `assets/${css}`);
  fs.writeFileSync(path.join(outDir, 'index.html'), page);
  const files = ['index.html', `assets/${js}`, `assets/${css}`].map((name) => {
    const bytes = fs.readFileSync(path.join(outDir, name));
    return { name, bytes: bytes.length, gzipBytes: zlib.gzipSync(bytes, { level: 9 }).length };
  });
  return { outDir, files, gzipBytes: files.reduce((n, f) => n + f.gzipBytes, 0) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const built = await buildUi(process.argv[2] ? path.resolve(process.argv[2]) : UI_OUT);
  for (const f of built.files) console.log(`ui: ${f.name} ${f.bytes} bytes (${f.gzipBytes} gzipped)`);
  console.log(`ui: ${built.outDir}, ${built.gzipBytes} bytes gzipped in all`);
}
