// The orphan sweep's QEMU part (the reclaim phase): VM cgroups that no kept VM has are removed.
import { listVmCgroups, removeVmCgroup } from '../../host/cgroups/index.ts';
import type { ReclaimCounts } from '../../vms/ports.ts';
import type { QemuContext } from './options.ts';

export async function reclaimOrphans(ctx: QemuContext, keep: ReadonlySet<string>): Promise<ReclaimCounts> {
  let cgroups = 0;
  if (ctx.cgroup === false) return { cgroups };
  for (const name of await listVmCgroups(ctx.cgroup)) {
    if (keep.has(name)) continue;
    try {
      await removeVmCgroup(name, ctx.cgroup);
      cgroups++;
      ctx.log.info({ cgroup: name }, `qemu: removed cgroup ${name}, which no VM owns`);
    } catch (error) {
      // A cgroup that still holds a process is refused by the kernel: it is left, and said so.
      ctx.log.warn({ cgroup: name }, `qemu: cgroup ${name} no VM owns was not removed (${(error as Error).message})`);
    }
  }
  return { cgroups };
}
