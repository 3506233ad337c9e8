// Small file helpers for the image build: content hashes, atomic replacement, sizes.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export { exists } from '../shared/files.ts';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) {
    hash.update(chunk as Buffer);
  }
  return hash.digest('hex');
}

/** sha256 over a list of labelled parts; the labels keep `a|bc` and `ab|c` apart. */
export function hashParts(parts: Readonly<Record<string, string>>): string {
  const hash = createHash('sha256');
  for (const key of Object.keys(parts).sort()) {
    const value = parts[key] ?? '';
    hash.update(`${key.length}:${key}=${value.length}:${value}\n`);
  }
  return hash.digest('hex');
}

/**
 * Hash of a directory tree: names, types, modes, symlink targets and file contents. `skip` gets
 * the path relative to `root` and says whether to leave it out.
 */
export async function hashTree(root: string, skip: (rel: string) => boolean = () => false): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    const entries = (await readdir(join(root, rel), { withFileTypes: true })).map((e) => e.name).sort();
    for (const name of entries) {
      const childRel = rel === '' ? name : `${rel}/${name}`;
      if (skip(childRel)) continue;
      const full = join(root, childRel);
      const st = await lstat(full);
      if (st.isSymbolicLink()) {
        hash.update(`L ${childRel} -> ${await readlink(full)}\n`);
      } else if (st.isDirectory()) {
        hash.update(`D ${childRel} ${st.mode & 0o7777}\n`);
        await walk(childRel);
      } else if (st.isFile()) {
        hash.update(`F ${childRel} ${st.mode & 0o7777} ${st.size} ${await sha256File(full)}\n`);
      }
    }
  };
  await walk('');
  return hash.digest('hex');
}

/** A sibling temp name for `path` that a crashed build can leave behind without harm. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Writes `data` next to `path`, then renames it into place, so readers never see half a file. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const temp = tempPathFor(path);
  try {
    await writeFile(temp, data, { mode });
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Runs `produce(tempPath)` and renames the result to `path` only if it succeeded. */
export async function produceAtomic<T>(path: string, produce: (temp: string) => Promise<T>): Promise<T> {
  const temp = tempPathFor(path);
  try {
    const result = await produce(temp);
    await rename(temp, path);
    return result;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  }
}

/** Removes temp files (`.NAME.tmp-*`) that an interrupted build left in `dir`. */
export async function removeStaleTemps(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(
    names.filter((n) => /^\..+\.tmp-\d+-[0-9a-f]{8}$/.test(n)).map((n) => rm(join(dir, n), { recursive: true, force: true })),
  );
}

export async function readJson(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

export function formatBytes(bytes: number): string {
  if (bytes >= 1024 ** 3) return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
  if (bytes >= 1024 ** 2) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export function formatMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(0)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}
