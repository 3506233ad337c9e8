// What surrounds a VMM: its cgroup (and anything left in it) and its jail. Removed after a stop,
// after a failed start, and by the orphan sweep.
import type { VmCgroup } from '../../host/cgroups/index.ts';
import { describeProcess, killProcess } from '../../host/process.ts';
import { removeJailsOf } from './jail.ts';
import { message, type DriverContext } from './options.ts';
import type { VmmSetup } from './setup.ts';

export interface Surroundings {
  readonly instanceId: string;
  readonly cgroup: VmCgroup | undefined;
  readonly chrootBaseDir: string | undefined;
}

export function surroundingsOf(setup: VmmSetup): Surroundings {
  return { instanceId: setup.command.instanceId, cgroup: setup.cgroup, chrootBaseDir: setup.jail?.chrootBaseDir };
}

/** Ends every process in the VM's cgroup: only this VM's VMM (or its jailer) can be in it. */
export async function killCgroupMembers(ctx: DriverContext, cgroup: VmCgroup | undefined, label: string): Promise<void> {
  if (!cgroup) return;
  for (const pid of await cgroup.pids()) {
    const proc = pid === process.pid ? undefined : describeProcess(pid);
    if (!proc) continue;
    ctx.log.info({ pid }, `${label}: killing pid ${pid}, left in the VM's cgroup`);
    await killProcess(proc);
  }
}

/** Kills what is left in the instance's cgroup, removes its jails and its cgroup. Returns what failed. */
export async function removeSurroundings(ctx: DriverContext, what: Surroundings, label: string): Promise<string[]> {
  const problems: string[] = [];
  try {
    await killCgroupMembers(ctx, what.cgroup, label);
  } catch (error) {
    problems.push(`cgroup processes: ${message(error)}`);
  }
  if (what.chrootBaseDir !== undefined) {
    try {
      await removeJailsOf(what.chrootBaseDir, what.instanceId);
    } catch (error) {
      problems.push(`jail: ${message(error)}`);
    }
  }
  if (what.cgroup) {
    try {
      await what.cgroup.remove();
    } catch (error) {
      problems.push(`cgroup: ${message(error)}`);
    }
  }
  return problems;
}
