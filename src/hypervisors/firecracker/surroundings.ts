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

/** Ends every process in the VM's cgroup: only this VM's VMM (or its jailer) can be in it. Returns how many. */
export async function killCgroupMembers(ctx: DriverContext, cgroup: VmCgroup | undefined, label: string): Promise<number> {
  if (!cgroup) return 0;
  let killed = 0;
  for (const pid of await cgroup.pids()) {
    const proc = pid === process.pid ? undefined : describeProcess(pid);
    if (!proc) continue;
    ctx.log.info({ pid, cgroup: cgroup.name }, `${label}: killing pid ${pid}, left in the VM's cgroup`);
    await killProcess(proc);
    killed++;
  }
  return killed;
}

/** What clearSurroundings removed, and what it could not. */
export interface Cleared {
  readonly processes: number;
  /** The jail directories removed. */
  readonly jails: readonly string[];
  readonly cgroup: boolean;
  readonly problems: readonly string[];
}

/** Kills what is left in the instance's cgroup, removes its jails and its cgroup; reports each part. */
export async function clearSurroundings(ctx: DriverContext, what: Surroundings, label: string): Promise<Cleared> {
  const problems: string[] = [];
  const attempt = async <T>(part: string, fallback: T, work: () => Promise<T>): Promise<T> => {
    try {
      return await work();
    } catch (error) {
      problems.push(`${part}: ${message(error)}`);
      return fallback;
    }
  };
  const processes = await attempt('cgroup processes', 0, () => killCgroupMembers(ctx, what.cgroup, label));
  const base = what.chrootBaseDir;
  const jails = base === undefined ? [] : await attempt<string[]>('jail', [], () => removeJailsOf(base, what.instanceId));
  const cg = what.cgroup;
  // Counted only when there was one: an instance may have left a jail but no cgroup.
  const removeCgroup = async (): Promise<boolean> => {
    if (!cg || !(await cg.exists())) return false;
    await cg.remove();
    return true;
  };
  const cgroup = await attempt('cgroup', false, removeCgroup);
  return { processes, jails, cgroup, problems };
}

/** Kills what is left in the instance's cgroup, removes its jails and its cgroup. Returns what failed. */
export async function removeSurroundings(ctx: DriverContext, what: Surroundings, label: string): Promise<string[]> {
  return [...(await clearSurroundings(ctx, what, label)).problems];
}
