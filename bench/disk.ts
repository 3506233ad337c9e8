// Disk per new VM: a sparse writable layer over the shared base, against copying the base (what
// the original design did for every seat). The base is real data, 2 GiB, so a copy costs what
// copying an image costs.
import { copyFile, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { diskUsageBytes, ensureLayerDisk } from '../src/disks/layer.ts';
import { median, mib, ms, timed, type Results } from './stats.ts';

async function makeBase(path: string, sizeMb: number): Promise<void> {
  const handle = await open(path, 'w');
  const chunk = randomBytes(1024 * 1024);
  for (let i = 0; i < sizeMb; i++) await handle.write(chunk);
  await handle.sync();
  await handle.close();
}

export async function diskBench(dir: string, results: Results, baseMb = 2048, runs = 3): Promise<void> {
  process.stdout.write(`\n## disk per new VM, base ${baseMb} MiB\n`);
  const base = join(dir, 'base.ext4');
  await makeBase(base, baseMb);
  const copy: number[] = [];
  const layer: number[] = [];
  let copyUse = 0;
  let layerUse = 0;
  for (let i = 0; i < runs; i++) {
    const copied = join(dir, `copy-${i}`);
    copy.push(
      await timed(async () => {
        await copyFile(base, copied);
        const h = await open(copied, 'r+');
        await h.sync();
        await h.close();
      }),
    );
    copyUse = await diskUsageBytes(copied);
    await rm(copied);
    const layered = join(dir, `layer-${i}.ext4`);
    layer.push(await timed(() => ensureLayerDisk(layered, 10240)));
    layerUse = await diskUsageBytes(layered);
    await rm(layered);
  }
  await rm(base);
  results.add(
    'disk',
    `time to make a VM's disk (${baseMb} MiB base), median of ${runs}`,
    `copy ${ms(median(copy))}`,
    `layer ${ms(median(layer))}`,
    median(layer) / median(copy),
  );
  results.add('disk', 'disk used per new VM', `copy ${mib(copyUse)}`, `layer ${mib(layerUse)}`, layerUse / copyUse);
}
