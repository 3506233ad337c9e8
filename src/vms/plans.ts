// The lifecycle's plans, built from its ports: what booting, repairing and tearing down one VM
// consists of, step by step (see plan.ts for how a plan runs).
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { LifecyclePorts } from './lifecycle-ports.ts';
import type { VmRecord } from './model.ts';
import type { Step } from './plan.ts';
import type { GuestIdentity, SnapshotFiles, VmEndpoint, VmLaunchSpec, VmmProcess } from './ports.ts';
import type { VmDirectories } from './vm-directory.ts';

export interface VmPlanContext {
  readonly ports: LifecyclePorts;
  readonly dirs: VmDirectories;
  readonly vm: VmRecord;
  readonly spec: VmLaunchSpec;
  readonly vmDiskMb: number;
  readonly gracefulStopMs: number;
  /** Records the VMM the `vmm` step started. */
  readonly onStarted: (proc: VmmProcess) => void;
  /** A new seat restored from a snapshot instead of booted cold (creates only). */
  readonly restore?: RestoreRequest;
}

export interface RestoreRequest {
  readonly files: SnapshotFiles;
  readonly identity: GuestIdentity;
  /** Told when the restore failed and the seat booted cold instead, with the reason. */
  readonly onFallback: (reason: string) => void;
}

export function endpoint(vm: VmRecord): VmEndpoint {
  return { tap: vm.tapName, mac: vm.mac, ip: vm.ip };
}

/** The VMM recorded for the VM, if any. */
export function recordedProcess(vm: VmRecord): VmmProcess | undefined {
  return vm.pid !== null && vm.pidStartTime !== null ? { pid: vm.pid, startTime: vm.pidStartTime } : undefined;
}

function vmmRuns(c: VmPlanContext): boolean {
  const proc = recordedProcess(c.vm);
  return proc !== undefined && c.ports.driver.isAlive(proc);
}

/** Bridge and TAP: all an adopted, still running VM needs repaired. */
export function networkPlan(c: VmPlanContext): Step[] {
  const { network, driver } = c.ports;
  return [
    { name: 'bridge', do: () => network.ensureBridge() },
    { name: 'tap', do: async () => network.attach(endpoint(c.vm), await driver.vmmOwner?.(c.spec)) },
  ];
}

/** Everything a VM needs to run; on a restart the directory and layer are found and kept. */
export function bootPlan(c: VmPlanContext): Step[] {
  // The restore asked for; dropped (the seat boots cold) if the snapshot's layer cannot be copied.
  let restore = c.restore;
  return [
    ...networkPlan(c),
    { name: 'vm directory', needed: async () => !(await c.dirs.isMade(c.vm)), do: () => c.dirs.make(c.vm) },
    {
      name: 'writable layer',
      needed: async () => !present(c.spec.layerDiskPath),
      // A restored guest had the snapshot's layer mounted: it goes on with a copy of it. The
      // snapshot may be gone meanwhile (its build pruned by a rebuild): the seat then boots cold.
      do: async () => {
        if (restore) {
          try {
            await c.ports.disks.copyLayer(restore.files.layerPath, c.spec.layerDiskPath);
            return;
          } catch (error) {
            restore.onFallback(`the snapshot's layer could not be copied: ${(error as Error).message}`);
            restore = undefined;
            await rm(c.spec.layerDiskPath, { force: true });
          }
        }
        await c.ports.disks.ensureLayer(c.spec.layerDiskPath, c.vmDiskMb);
      },
    },
    { name: 'images', do: async () => checkImages(c.spec) },
    { name: 'vmm', needed: async () => !vmmRuns(c), do: async () => c.onStarted(await startVmm(c, restore)) },
  ];
}

/** Restores the seat from its snapshot when asked; if that fails, boots it cold on a fresh layer. */
async function startVmm(c: VmPlanContext, restore: RestoreRequest | undefined): Promise<VmmProcess> {
  const snapshots = c.ports.driver.snapshots;
  if (!restore || !snapshots) return c.ports.driver.start(c.spec);
  try {
    return await snapshots.restore(c.spec, restore.files, restore.identity);
  } catch (error) {
    restore.onFallback(`restore failed: ${(error as Error).message}`);
    await rm(c.spec.layerDiskPath, { force: true });
    await c.ports.disks.ensureLayer(c.spec.layerDiskPath, c.vmDiskMb);
    return c.ports.driver.start(c.spec);
  }
}

/** Stops the VMM (gracefully, then by force); the disk, TAP and directory stay. */
function stopVmmStep(c: VmPlanContext): Step {
  const { driver, processes } = c.ports;
  return {
    name: 'stop vmm',
    do: async () => {
      // Also for a VMM that already died: the driver still removes its cgroup, jail, sockets.
      const proc = recordedProcess(c.vm);
      if (proc) await driver.stop(c.spec, proc, driver.isAlive(proc) ? c.gracefulStopMs : 0);
      // A VMM started by a create that crashed before recording its pid.
      for (const stray of await processes.findUnder(c.spec.runDir)) await processes.kill(stray);
    },
  };
}

/** Stopping a VM on request: only its VMM goes; a start boots it again from the same layer. */
export function stopPlan(c: VmPlanContext): Step[] {
  return [stopVmmStep(c)];
}

/** Stops the VMM and removes the TAP and the VM's directory (disk, sockets, console). Every step runs. */
export function teardownPlan(c: VmPlanContext): Step[] {
  const { network } = c.ports;
  return [
    stopVmmStep(c),
    { name: 'remove tap', do: () => network.detach(endpoint(c.vm)) },
    { name: 'remove vm directory', do: () => c.dirs.remove(c.vm.tapName) },
  ];
}

// stat, not lstat: a dangling symlink is as missing as no file. Synchronous: a stat of a local
// file takes microseconds, and a create asks several (the thread pool's round trip costs more).
function present(path: string): boolean {
  return existsSync(path);
}

function checkImages(spec: VmLaunchSpec): void {
  for (const path of [spec.kernelPath, spec.initrdPath, spec.baseDiskPath]) {
    if (!present(path)) throw new Error(`${path} is missing: run \`clarateach image build\``);
  }
}
