/**
 * The agent as one CommonJS file: esbuild bundle of client/agent + client/common. Shared by
 * scripts/package-agent.ts (which injects it into a Node binary), test/agent-bundle.test.ts and
 * bench/agent-package.ts, so all three measure and check the same artifact.
 *
 * CommonJS because Node 20's single executable applications run only a CommonJS main script, whose
 * `require` reaches Node's built-in modules and nothing else. The build therefore fails when the bundle
 * would import anything that is not a built-in (a native addon, a package, a file of server/).
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const AGENT_ENTRY = 'client/agent/main.ts';
/** Where the bundle's sources may come from (client/ never imports server/; the robot has no node_modules). */
export const ALLOWED_SOURCES = ['client/agent/', 'client/common/'];

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string' || !/^\d+\.\d+\.\d+/.test(pkg.version)) throw new Error('package.json has no usable "version"');
  return pkg.version;
}

/**
 * version.ts finds the version in the package.json above its own file (import.meta.url), which a bundle
 * inside an executable does not have: the bundle gets the same function returning the version it was built from.
 */
function fixedVersion(version: string): Plugin {
  return {
    name: 'agent-version',
    setup(b) {
      b.onLoad({ filter: /[\\/]client[\\/]agent[\\/]version\.ts$/ }, (args) => {
        if (!/export function agentVersion\(\)/.test(readFileSync(args.path, 'utf8'))) {
          throw new Error(`${args.path} no longer exports agentVersion(): update scripts/lib/agent-bundle.ts`);
        }
        return { contents: `export function agentVersion(): string { return ${JSON.stringify(version)}; }\n`, loader: 'ts' };
      });
    },
  };
}

const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

export interface AgentBundle {
  outfile: string;
  bytes: number;
  version: string;
  /** Source files in the bundle, relative to the repository root. */
  sources: string[];
  /** What the bundle still imports at run time (all Node built-ins, or the build fails). */
  imports: string[];
}

export async function bundleAgent(outfile: string, opts: { minify?: boolean } = {}): Promise<AgentBundle> {
  const version = packageVersion();
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [AGENT_ENTRY],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    minify: opts.minify ?? true,
    // keeps function and class names in error stacks (the agent prints err.stack with --verbose)
    keepNames: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'silent',
    plugins: [fixedVersion(version)],
    banner: { js: `/* enclave-agent ${version}: bundle of ${ALLOWED_SOURCES.join(' + ')} */` },
  });
  if (result.warnings.length > 0) {
    throw new Error(`esbuild warnings: ${result.warnings.map((w) => `${w.location?.file ?? ''}: ${w.text}`).join('; ')}`);
  }
  const sources = Object.keys(result.metafile.inputs).map((p) => relative(ROOT, resolve(ROOT, p))).sort();
  const foreign = sources.filter((s) => !ALLOWED_SOURCES.some((a) => s.startsWith(a)));
  if (foreign.length > 0) throw new Error(`the agent bundle would contain files outside ${ALLOWED_SOURCES.join(', ')}: ${foreign.join(', ')}`);
  const out = Object.values(result.metafile.outputs)[0];
  const imports = [...new Set((out?.imports ?? []).map((i) => i.path))].sort();
  const nonBuiltin = imports.filter((i) => !BUILTINS.has(i));
  if (nonBuiltin.length > 0) throw new Error(`the agent bundle imports modules that are not Node built-ins: ${nonBuiltin.join(', ')}`);
  return { outfile, bytes: out?.bytes ?? 0, version, sources, imports };
}
