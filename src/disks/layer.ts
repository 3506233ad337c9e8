// Per-VM writable layer. The shared base image is never copied: each VM gets a sparse ext4 file
// that the guest's initramfs stacks over the read-only base with overlayfs. Creating it costs the
// same whatever the base image's size.
import { rename, rm, stat } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { run } from '../shared/exec.ts';
import { exists } from '../shared/files.ts';
import type { DiskPort } from '../vms/ports.ts';

/** Filesystem label the guest's initramfs looks for. */
export const LAYER_LABEL = 'clarateach-layer';

/** Creates the layer at `path` unless it exists; an interrupted creation leaves only a temp file. */
export async function ensureLayerDisk(path: string, sizeMb: number): Promise<void> {
  if (await exists(path)) return;
  const temp = `${path}.tmp`;
  await rm(temp, { force: true });
  const handle = await open(temp, 'w');
  try {
    await handle.truncate(sizeMb * 1024 * 1024);
  } finally {
    await handle.close();
  }
  await run('mkfs.ext4', ['-q', '-F', '-L', LAYER_LABEL, '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1', temp]);
  await rename(temp, path);
}

/**
 * A copy of the layer `source` (a snapshot's) at `path`, unless it exists. `cp --sparse=always`
 * keeps the holes, so copying a mostly empty layer writes only its few used MiB.
 */
export async function copyLayerDisk(source: string, path: string): Promise<void> {
  if (await exists(path)) return;
  const temp = `${path}.tmp`;
  await rm(temp, { force: true });
  await run('cp', ['--sparse=always', '--reflink=auto', '--', source, temp]);
  await rename(temp, path);
}

/** Bytes the file really occupies on disk (sparse files count only written blocks). */
export async function diskUsageBytes(path: string): Promise<number> {
  const s = await stat(path);
  return s.blocks * 512;
}

/** The writable layers as the lifecycle's DiskPort. */
export const layerDisks: DiskPort = { ensureLayer: ensureLayerDisk, copyLayer: copyLayerDisk };
