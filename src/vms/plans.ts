// The lifecycle's plans, built from its ports: what booting, repairing and tearing down one VM
// consists of, step by step (see plan.ts for how a plan runs).
import { stat } from 'node:fs/promises';
import type { LifecyclePorts } from './lifecycle-ports.ts';
import type { VmRecord } from './model.ts';
import type { Step } from './plan.ts';
import type { VmEndpoint, VmLaunchSpec, VmmProcess } from './ports.ts';
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
  return [
    ...networkPlan(c),
    { name: 'vm directory', needed: async () => !(await c.dirs.isMade(c.vm)), do: () => c.dirs.make(c.vm) },
    {
      name: 'writable layer',
      needed: async () => !(await present(c.spec.layerDiskPath)),
      do: () => c.ports.disks.ensureLayer(c.spec.layerDiskPath, c.vmDiskMb),
    },
    { name: 'images', do: () => checkImages(c.spec) },
    { name: 'vmm', needed: async () => !vmmRuns(c), do: async () => c.onStarted(await c.ports.driver.start(c.spec)) },
  ];
}

/** Stops the VMM and removes the TAP and the VM's directory (disk, sockets, console). Every step runs. */
export function teardownPlan(c: VmPlanContext): Step[] {
  const { driver, network, processes } = c.ports;
  return [
    {
      name: 'stop vmm',
      do: async () => {
        // Also for a VMM that already died: the driver still removes its cgroup, jail, sockets.
        const proc = recordedProcess(c.vm);
        if (proc) await driver.stop(c.spec, proc, driver.isAlive(proc) ? c.gracefulStopMs : 0);
        // A VMM started by a create that crashed before recording its pid.
        for (const stray of await processes.findUnder(c.spec.runDir)) await processes.kill(stray);
      },
    },
    { name: 'remove tap', do: () => network.detach(endpoint(c.vm)) },
    { name: 'remove vm directory', do: () => c.dirs.remove(c.vm.tapName) },
  ];
}

// stat, not lstat: a dangling symlink is as missing as no file.
function present(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function checkImages(spec: VmLaunchSpec): Promise<void> {
  for (const path of [spec.kernelPath, spec.initrdPath, spec.baseDiskPath]) {
    if (!(await present(path))) throw new Error(`${path} is missing: run \`clarateach image build\``);
  }
}
