/**
 * Packs local folders into the `.tar.gz` bodies the API takes (keystore import, policy folders), in
 * memory: both are bounded by the server's limits (tens of MB at most). Symlinks are stored as symlinks,
 * exactly as sros2 lays them out (`identity_ca.cert.pem -> ca.cert.pem`); the server checks that every
 * target stays inside the archive, so nothing is resolved here.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { UsageError } from './errors.js';

export function isGzip(data: Buffer): boolean {
  return data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b;
}

export const looksLikeTarGz = (file: string): boolean => /\.(tar\.gz|tgz)$/i.test(file);

interface Item {
  /** Archive name, `/`-separated, relative to the packed folder. */
  name: string;
  abs: string;
}

function walk(root: string, rel: string, out: Item[]): void {
  const dir = path.join(root, rel);
  // Sorted, so the same folder always packs to the same archive (and reviews/diffs stay stable).
  for (const name of fs.readdirSync(dir).sort()) {
    const relName = rel ? `${rel}/${name}` : name;
    const abs = path.join(root, relName);
    out.push({ name: relName, abs });
    if (fs.lstatSync(abs).isDirectory()) walk(root, relName, out);
  }
}

/** Every entry below `root` (folders, files, symlinks), as archive names relative to it. */
export function listFolder(root: string): string[] {
  const items: Item[] = [];
  walk(root, '', items);
  return items.map((i) => i.name);
}

/**
 * A `.tar.gz` of `names` (relative to `root`; folders are added implicitly when missing). Regular files
 * keep their permission bits; owners are zeroed so an archive reveals no local account.
 */
export async function packTarGz(root: string, names: string[]): Promise<Buffer> {
  const pack = tar.pack();
  const gzip = zlib.createGzip();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    gzip.on('data', (c: Buffer) => chunks.push(c));
    gzip.on('end', () => resolve(Buffer.concat(chunks)));
    gzip.on('error', reject);
    pack.on('error', reject);
  });
  pack.pipe(gzip);
  const add = (header: Partial<tar.Header> & { name: string }, body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body) pack.entry(header, body, cb);
      else pack.entry(header, cb);
    });
  const seen = new Set<string>();
  const ensureParents = async (name: string): Promise<void> => {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (seen.has(dir)) continue;
      seen.add(dir);
      await add({ name: `${dir}/`, type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: new Date() });
    }
  };
  for (const name of names) {
    if (seen.has(name)) continue;
    const abs = path.join(root, name);
    const st = fs.lstatSync(abs);
    await ensureParents(name);
    seen.add(name);
    const common = { mode: st.mode & 0o777, uid: 0, gid: 0, mtime: st.mtime };
    if (st.isDirectory()) await add({ ...common, name: `${name}/`, type: 'directory' });
    else if (st.isSymbolicLink()) await add({ ...common, name, type: 'symlink', linkname: fs.readlinkSync(abs) });
    else if (st.isFile()) await add({ ...common, name, type: 'file', size: st.size }, fs.readFileSync(abs));
    else throw new UsageError(`${abs}: not a file, folder or symlink; cannot pack it`);
  }
  pack.finalize();
  return done;
}

/** The whole folder as a `.tar.gz` whose root is the folder itself (entries `public/...`, `enclaves/...`). */
export async function packFolder(root: string): Promise<Buffer> {
  return packTarGz(root, listFolder(root));
}
