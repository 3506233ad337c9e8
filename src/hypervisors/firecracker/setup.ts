// How one VM's VMM runs (the configuration phase): its command line, the launch spec as the VMM
// sees it, its cgroup and limits, and its jail when the jailer is used. Nothing is made here.
import {
  isSettingSupported,
  openVmCgroup,
  vmCgroupSettings,
  type ResolvedPlacement,
  type VmCgroup,
  type VmLimits,
} from '../../host/cgroups/index.ts';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { buildVmmCommand, DEFAULT_CHROOT_BASE_DIR, type JailerOptions, type VmmCommand } from './command.ts';
import { DEFAULT_JAIL_UID_BASE, jailedSpec, jailIdsForVm, resolveExecutable, type JailIds } from './jail.ts';
import type { DriverContext } from './options.ts';

export interface VmmSetup {
  readonly command: VmmCommand;
  /** The launch spec with the paths the VMM sees (jail-relative with the jailer). */
  readonly bootSpec: VmLaunchSpec;
  readonly limits: VmLimits;
  readonly placement?: ResolvedPlacement;
  /** The VM's cgroup (it need not exist yet); absent with cgroups off. */
  readonly cgroup?: VmCgroup;
  readonly jail?: { readonly ids: JailIds; readonly chrootBaseDir: string; readonly chrootDir: string; readonly pidFile?: string };
}

export async function vmmSetup(ctx: DriverContext, spec: VmLaunchSpec, prepare: boolean): Promise<VmmSetup> {
  const limits: VmLimits = { vcpus: spec.vcpus, memoryMb: spec.memoryMb, overheadMb: ctx.overheadMb };
  const cg = await ctx.placement(prepare);
  if (!ctx.opts.jailerBin) {
    const command = buildVmmCommand({ firecrackerBin: ctx.opts.firecrackerBin, vmId: spec.id, runDir: spec.runDir });
    const cgroup = cg ? await openVmCgroup(command.instanceId, cg) : undefined;
    return { command, bootSpec: spec, limits, ...(cg && cgroup ? { placement: cg, cgroup } : {}) };
  }
  if (cg?.relativeTo === 'self')
    throw new Error('with the jailer, VM cgroups are placed from the hierarchy root (cgroup.relativeTo "root")');
  // The jailer names the jail after the real file, symlinks resolved.
  const execFile = await resolveExecutable(ctx.opts.firecrackerBin, true);
  const ids = jailIdsForVm(spec.mac, ctx.jail.uidBase ?? DEFAULT_JAIL_UID_BASE);
  const jailer = await jailerOptions(ctx, ctx.opts.jailerBin, ids, cg, limits);
  const command = buildVmmCommand({ firecrackerBin: execFile, vmId: spec.id, runDir: spec.runDir, jailer });
  if (!command.jail) throw new Error('internal: a jailer command without a jail layout');
  const { chrootBaseDir, chrootDir, pidFile } = command.jail;
  const cgroup = cg ? await openVmCgroup(command.instanceId, cg) : undefined;
  return {
    command,
    bootSpec: jailedSpec(spec),
    limits,
    ...(cg && cgroup ? { placement: cg, cgroup } : {}),
    jail: { ids, chrootBaseDir, chrootDir, ...(pidFile ? { pidFile } : {}) },
  };
}

/** The jailer's flags: the VM's ids, and the cgroup settings this host's hierarchy supports. */
async function jailerOptions(
  ctx: DriverContext,
  jailerBinName: string,
  ids: JailIds,
  cg: ResolvedPlacement | undefined,
  limits: VmLimits,
): Promise<JailerOptions> {
  const cgroups: Record<string, string> = {};
  if (cg) {
    for (const setting of vmCgroupSettings(cg.layout.version, limits)) {
      if (await isSettingSupported(cg, setting)) cgroups[setting.file] = setting.value;
    }
  }
  const jail = ctx.jail;
  return {
    jailerBin: await resolveExecutable(jailerBinName, false),
    uid: ids.uid,
    gid: ids.gid,
    chrootBaseDir: jail.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR,
    ...(cg ? { cgroupVersion: cg.layout.version, parentCgroup: cg.parent, cgroups } : {}),
    ...(jail.netns !== undefined ? { netns: jail.netns } : {}),
    ...(jail.resourceLimits ? { resourceLimits: jail.resourceLimits } : {}),
    ...(jail.newPidNs ? { newPidNs: true } : {}),
  };
}
