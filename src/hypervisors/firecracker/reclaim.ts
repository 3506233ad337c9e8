// The orphan sweep's Firecracker part (the reclaim phase): every cgroup and jail whose instance
// no kept VM has is removed, with whatever still runs in it, and counted by kind.
import { basename } from 'node:path';
import { listVmCgroups, openVmCgroup, type ResolvedPlacement, type VmCgroup } from '../../host/cgroups/index.ts';
import type { ReclaimCounts } from '../../vms/ports.ts';
import { DEFAULT_CHROOT_BASE_DIR, firecrackerInstanceId, jailedInstanceId } from './command.ts';
import { listJailIds, resolveExecutable } from './jail.ts';
import { message, type DriverContext } from './options.ts';
import { clearSurroundings } from './surroundings.ts';

/** What the sweep looks at: the kept instances, the cgroup placement and the chroot base (with the jailer). */
interface Scope {
  readonly kept: ReadonlySet<string>;
  readonly placement: ResolvedPlacement | undefined;
  readonly chrootBaseDir: string | undefined;
}

/** Counts by kind; `processes` adds to the lifecycle's own count of VMM processes no VM owns. */
interface Counts {
  cgroups: number;
  jails: number;
  processes: number;
}

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
    ctx.log.warn({ error: message(error) }, `firecracker: orphan cleanup skipped: ${message(error)}`);
    return undefined;
  }
}

async function sweepScope(ctx: DriverContext, keep: ReadonlySet<string>): Promise<Scope | undefined> {
  const chrootBaseDir = ctx.opts.jailerBin ? (ctx.jail.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR) : undefined;
  const kept = await keptInstances(ctx, keep, chrootBaseDir);
  if (!kept) return undefined;
  let placement: ResolvedPlacement | undefined;
  try {
    placement = await ctx.placement(false);
  } catch (error) {
    ctx.log.warn({ error: message(error) }, `firecracker: orphan cgroups not looked for: ${message(error)}`);
  }
  return { kept, placement, chrootBaseDir };
}

/** Instance ids that have a cgroup or a jail but no kept VM, in order. */
async function orphanInstances(scope: Scope): Promise<string[]> {
  const cgroups = scope.placement ? await listVmCgroups(scope.placement) : [];
  const jails = scope.chrootBaseDir !== undefined ? await listJailIds(scope.chrootBaseDir) : [];
  return [...new Set([...cgroups, ...jails])].filter((id) => !scope.kept.has(id)).sort();
}

/** Removes one orphaned instance's processes, jails and cgroup; logs each thing removed and adds it to `counts`. */
async function reclaimInstance(ctx: DriverContext, scope: Scope, instanceId: string, counts: Counts): Promise<void> {
  const label = `firecracker ${instanceId}`;
  let cgroup: VmCgroup | undefined;
  try {
    cgroup = scope.placement ? await openVmCgroup(instanceId, scope.placement) : undefined;
  } catch (error) {
    // A directory under the parent cgroup that no VM id could name is not ours to remove.
    ctx.log.info({ instance: instanceId }, `${label}: left alone: ${message(error)}`);
    return;
  }
  const cleared = await clearSurroundings(ctx, { instanceId, cgroup, chrootBaseDir: scope.chrootBaseDir }, label);
  counts.processes += cleared.processes;
  for (const jail of cleared.jails) {
    counts.jails++;
    ctx.log.info({ instance: instanceId, jail }, `${label}: removed jail ${jail}, which no VM owns`);
  }
  if (cleared.cgroup && cgroup) {
    counts.cgroups++;
    ctx.log.info({ instance: instanceId, cgroup: cgroup.name }, `${label}: removed cgroup ${cgroup.name}, which no VM owns`);
  }
  if (cleared.problems.length > 0) {
    ctx.log.warn(
      { instance: instanceId, problems: cleared.problems },
      `${label}: leftovers no VM owns were not all removed: ${cleared.problems.join('; ')}`,
    );
  }
}

/**
 * A jailed VMM whose pid never got recorded (the agent died mid-start) cannot be found by its
 * command line, whose paths are jail-relative; it is found in its cgroup, which holds nothing else.
 */
export async function reclaimOrphans(ctx: DriverContext, keep: ReadonlySet<string>): Promise<ReclaimCounts> {
  const counts: Counts = { cgroups: 0, jails: 0, processes: 0 };
  const scope = await sweepScope(ctx, keep);
  if (!scope) return { ...counts };
  for (const instanceId of await orphanInstances(scope)) await reclaimInstance(ctx, scope, instanceId, counts);
  return { ...counts };
}
