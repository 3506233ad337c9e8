// The lock an image build holds on its directory: builds into one directory wait for each other,
// and the template catalog sees when a directory's files are mid-rebuild.
import { existsSync } from 'node:fs';
import { open, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describeProcess, isProcessAlive } from '../host/process.ts';
import { readJson } from './util.ts';

/** True while a live `image build` holds `dir`: its files are then half old, half new. */
export async function isBeingBuilt(dir: string): Promise<boolean> {
  // Asked on every create: no lock file (nearly always) is known without the thread pool's hop.
  if (!existsSync(join(dir, '.build.lock'))) return false;
  const holder = (await readJson(join(dir, '.build.lock'))) as { pid?: unknown; startTime?: unknown } | undefined;
  return (
    holder !== undefined &&
    typeof holder.pid === 'number' &&
    typeof holder.startTime === 'number' &&
    isProcessAlive({ pid: holder.pid, startTime: holder.startTime })
  );
}

/** Serialises builds using one directory (other processes wait). */
export async function lockDir(dir: string, progress: (msg: string) => void): Promise<() => Promise<void>> {
  const lockPath = join(dir, '.build.lock');
  let told = false;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx');
      const me = describeProcess(process.pid);
      await handle.writeFile(JSON.stringify({ pid: process.pid, startTime: me?.startTime ?? 0 }));
      await handle.close();
      return () => unlink(lockPath).catch(() => undefined);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = (await readJson(lockPath)) as { pid?: unknown; startTime?: unknown } | undefined;
    const alive =
      holder !== undefined &&
      typeof holder.pid === 'number' &&
      typeof holder.startTime === 'number' &&
      isProcessAlive({ pid: holder.pid, startTime: holder.startTime });
    if (!alive) {
      // Written by a build that died (or is being written this instant: then it is recent).
      const age = await stat(lockPath)
        .then((s) => Date.now() - s.mtimeMs)
        .catch(() => Infinity);
      if (holder !== undefined || age > 5000) await rm(lockPath, { force: true });
    } else if (!told) {
      progress(`waiting for the build of process ${String(holder.pid)} to finish`);
      told = true;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
