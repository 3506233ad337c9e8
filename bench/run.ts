// Benchmarks, each printed as a ratio against a baseline measured in the same run.
//   disk: making a VM's disk. Baseline: copying the base image (what the original design did for
//   every seat). Ours: a sparse writable layer over the shared base. Measured for two base sizes to
//   show that our cost does not grow with the image.
import { copyFile, mkdtemp, rm, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ensureLayerDisk, diskUsageBytes } from '../src/disks/layer.ts';

async function makeBase(path: string, sizeMb: number): Promise<void> {
  // Real data (not sparse) so a copy costs what copying an image costs.
  const handle = await open(path, 'w');
  const chunk = randomBytes(1024 * 1024);
  for (let i = 0; i < sizeMb; i++) await handle.write(chunk);
  await handle.sync();
  await handle.close();
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function median(runs: number, fn: (i: number) => Promise<number>): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < runs; i++) values.push(await fn(i));
  values.sort((a, b) => a - b);
  return values[Math.floor(values.length / 2)] ?? NaN;
}

async function diskBench(dir: string, baseMb: number): Promise<void> {
  const base = join(dir, `base-${baseMb}.ext4`);
  await makeBase(base, baseMb);
  const runs = 5;
  let copyUse = 0;
  let layerUse = 0;
  const copyMs = await median(runs, async (i) => {
    const target = join(dir, `copy-${baseMb}-${i}`);
    const ms = await timed(async () => {
      await copyFile(base, target);
      const h = await open(target, 'r+');
      await h.sync();
      await h.close();
    });
    copyUse = await diskUsageBytes(target);
    await rm(target);
    return ms;
  });
  const layerMs = await median(runs, async (i) => {
    const target = join(dir, `layer-${baseMb}-${i}.ext4`);
    const ms = await timed(() => ensureLayerDisk(target, 10240));
    layerUse = await diskUsageBytes(target);
    await rm(target);
    return ms;
  });
  const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MiB`;
  console.log(
    `disk, base ${baseMb} MiB: copy ${copyMs.toFixed(0)} ms / ${mb(copyUse)}  layer ${layerMs.toFixed(0)} ms / ${mb(layerUse)}` +
      `  -> time ratio layer/copy ${(layerMs / copyMs).toFixed(3)}, disk ratio ${(layerUse / copyUse).toFixed(4)}`,
  );
  await rm(base);
}

const dir = await mkdtemp(join(tmpdir(), 'ct-bench-'));
try {
  await writeFile(join(dir, '.keep'), '');
  for (const size of [256, 1024]) await diskBench(dir, size);
} finally {
  await rm(dir, { recursive: true, force: true });
}
