// The orphan sweep's Firecracker part (the reclaim phase): every cgroup and jail whose instance
// no kept VM has is removed, with whatever still runs in it, and counted.
import { basename } from 'node:path';
import { listVmCgroups, openVmCgroup, type ResolvedPlacement, type VmCgroup } from '../../host/cgroups/index.ts';
import type { ReclaimCounts } from '../../vms/ports.ts';
import { DEFAULT_CHROOT_BASE_DIR, firecrackerInstanceId, jailedInstanceId } from './command.ts';
import { listJailIds, resolveExecutable } from './jail.ts';
import { message, type DriverContext } from './options.ts';
import { removeSurroundings } from './surroundings.ts';

/** The instance ids (cgroup and jail names) of the kept VMs; undefined when they cannot be known. */
async function keptInstances(
  ctx: DriverContext,
  keep: ReadonlySet<string>,
  chrootBaseDir: string | undefined,
): Promise<Set<string> | undefined> {
  try {
    const execName = ctx.opts.jailerBin ? basename(await resolveExecutable(ctx.opts.firecrackerBin, true)) : undefined;
    return new Set(
      [...keep].map((id) =>
        chrootBaseDir !== undefined && execName !== undefined ? jailedInstanceId(id, chrootBaseDir, execName) : firecrackerInstanceId(id),
      ),
    );
  } catch (error) {
    // Without the binary the kept VMs' ids are unknown: removing anything could hit a live VM.
    ctx.log.warn(`firecracker: orphan cleanup skipped: ${message(error)}`);
    return undefined;
  }
}

/**
 * A jailed VMM whose pid never got recorded (the agent died mid-start) cannot be found by its
 * command line, whose paths are jail-relative; it is found in its cgroup, which holds nothing else.
 */
export async function reclaimOrphans(ctx: DriverContext, keep: ReadonlySet<string>): Promise<ReclaimCounts> {
  const removed = { cgroups: 0, jails: 0 };
  const chrootBaseDir = ctx.opts.jailerBin ? (ctx.jail.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR) : undefined;
  const kept = await keptInstances(ctx, keep, chrootBaseDir);
  if (!kept) return removed;
  let cg: ResolvedPlacement | undefined;
  try {
    cg = await ctx.placement(false);
  } catch (error) {
    ctx.log.warn(`firecracker: orphan cgroups not looked for: ${message(error)}`);
  }
  const found = new Set([...(cg ? await listVmCgroups(cg) : []), ...(chrootBaseDir !== undefined ? await listJailIds(chrootBaseDir) : [])]);
  for (const instanceId of [...found].sort()) {
    if (kept.has(instanceId)) continue;
    const label = `firecracker ${instanceId}`;
    let cgroup: VmCgroup | undefined;
    try {
      cgroup = cg ? await openVmCgroup(instanceId, cg) : undefined;
    } catch (error) {
      // A directory under the parent cgroup that no VM id could name is not ours to remove.
      ctx.log.info(`${label}: left alone: ${message(error)}`);
      continue;
    }
    const problems = await removeSurroundings(ctx, { instanceId, cgroup, chrootBaseDir }, label);
    if (problems.length > 0) {
      ctx.log.warn(`${label}: leftovers no VM owns were not all removed: ${problems.join('; ')}`);
      continue;
    }
    if (cgroup) removed.cgroups++;
    if (chrootBaseDir !== undefined) removed.jails++;
    ctx.log.info(`${label}: removed the cgroup, jail and processes that no VM owns`);
  }
  return removed;
}
