// Sweeping what a crash left behind: VMM processes, TAPs, VM directories and whatever the driver
// keeps per VM (cgroups, jails) that no recorded VM owns. Reports what it removed, by kind.
import type { Logger } from 'pino';
import type { LifecyclePorts } from './lifecycle-ports.ts';
import { vmId, type VmRecord } from './model.ts';
import type { ReclaimCounts } from './ports.ts';
import type { VmDirectories } from './vm-directory.ts';

export interface ReclaimDeps {
  readonly ports: LifecyclePorts;
  readonly dirs: VmDirectories;
  readonly log: Logger;
}

/** Adds counts kind by kind. */
export function addCounts(a: ReclaimCounts, b: ReclaimCounts): ReclaimCounts {
  const sum: Record<string, number> = { ...a };
  for (const [kind, n] of Object.entries(b)) sum[kind] = (sum[kind] ?? 0) + n;
  return sum;
}

/** Kills VMM processes under the VMs' directories that no record names (pid and start time). */
export async function killUnrecordedVmms(d: ReclaimDeps, owned: readonly VmRecord[]): Promise<ReclaimCounts> {
  let processes = 0;
  for (const proc of await d.ports.processes.findUnder(d.dirs.root)) {
    if (owned.some((vm) => vm.pid === proc.pid && vm.pidStartTime === proc.startTime)) continue;
    d.log.warn({ pid: proc.pid }, 'killing VMM process that no VM owns');
    await d.ports.processes.kill(proc);
    processes++;
  }
  return { processes };
}

/** Removes every process, driver resource, TAP and directory that none of `owned` accounts for. */
export async function reclaimOrphans(d: ReclaimDeps, owned: readonly VmRecord[]): Promise<ReclaimCounts> {
  const killed = await killUnrecordedVmms(d, owned);
  const driverKept = (await d.ports.driver.reclaim?.(new Set(owned.map((vm) => vmId(vm.workshopId, vm.seatId))))) ?? {};
  // A VM's TAP and directory are both named after its address: one set says what is owned.
  const ownedNames = new Set(owned.map((vm) => vm.tapName));
  let taps = 0;
  for (const tap of await d.ports.network.listTaps()) {
    if (ownedNames.has(tap)) continue;
    d.log.warn({ tap }, 'removing TAP that no VM owns');
    await d.ports.network.deleteTap(tap);
    taps++;
  }
  let directories = 0;
  for (const entry of await d.dirs.list()) {
    if (ownedNames.has(entry)) continue;
    d.log.warn({ dir: entry }, 'removing VM directory that no VM owns');
    await d.dirs.remove(entry);
    directories++;
  }
  return addCounts(addCounts(killed, driverKept), { taps, directories });
}
