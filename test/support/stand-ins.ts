// Stand-ins for unit tests of the lifecycle and the API: a VMM that is a real sleeping process
// (its command line names the VM's directory, as a real VMM's does) and an in-memory network.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { HypervisorDriver, NetworkPort, VmEndpoint, VmLaunchSpec, VmmProcess, VmRepository } from '../../src/vms/ports.ts';
import type { LifecyclePorts } from '../../src/vms/lifecycle-ports.ts';
import { layerDisks } from '../../src/disks/layer.ts';
import { TemplateCatalog } from '../../src/templates/catalog.ts';
import { parseCidr } from '../../src/network/cidr.ts';
import { seatAddressing, guestSubnet } from '../../src/network/host-network.ts';
import { TAP_PATTERN } from '../../src/network/tap.ts';
import { describeProcess, hostProcesses, isProcessAlive, killProcess } from '../../src/host/process.ts';

/** The network in memory, with the agent's real addressing (seat N gets .10+N, TAP and MAC from it). */
export class MemoryNetwork implements NetworkPort {
  readonly taps = new Set<string>();
  readonly addressing;
  readonly subnet;
  constructor(cidrText = '192.168.100.1/24') {
    const cidr = parseCidr(cidrText);
    this.addressing = seatAddressing(cidr);
    this.subnet = guestSubnet(cidr);
  }
  bridges = 0;
  async ensureBridge(): Promise<void> {
    this.bridges++;
  }
  async attach(vm: VmEndpoint): Promise<void> {
    this.taps.add(vm.tap);
  }
  /** The next detach fails with this reason (a TAP the kernel will not let go, say). */
  failNextDetach: string | undefined;
  async detach(vm: VmEndpoint): Promise<void> {
    if (this.failNextDetach) {
      const reason = this.failNextDetach;
      this.failNextDetach = undefined;
      throw new Error(reason);
    }
    this.taps.delete(vm.tap);
  }
  async deleteTap(name: string): Promise<void> {
    this.taps.delete(name);
  }
  async listTaps(): Promise<string[]> {
    return [...this.taps].filter((t) => TAP_PATTERN.test(t));
  }
}

/** Starts a detached long-sleeping process whose command line names the VM's directory, as a VMM's does. */
export function spawnStandIn(runDir: string): VmmProcess {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)', join(runDir, 'vmm.sock')], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  const proc = describeProcess(child.pid ?? -1);
  assert.ok(proc);
  return proc;
}

export class StandInDriver implements HypervisorDriver {
  readonly info = { name: 'qemu', acceleration: 'tcg' } as const;
  failNext: string | undefined;
  started: VmLaunchSpec[] = [];
  async start(spec: VmLaunchSpec): Promise<VmmProcess> {
    const proc = spawnStandIn(spec.runDir);
    if (this.failNext) {
      const reason = this.failNext;
      this.failNext = undefined;
      // Leave the process behind on purpose: the lifecycle must find and remove it.
      throw new Error(reason);
    }
    this.started.push(spec);
    return proc;
  }
  isAlive(proc: VmmProcess): boolean {
    return isProcessAlive(proc);
  }
  /** The next stop kills the VMM, then fails (as a cgroup or jail that will not go). */
  failNextStop: string | undefined;
  async stop(_spec: VmLaunchSpec, proc: VmmProcess): Promise<void> {
    await killProcess(proc);
    const reason = this.failNextStop;
    this.failNextStop = undefined;
    if (reason) throw new Error(reason);
  }
}

/**
 * The lifecycle's ports for a unit test: the given store, driver and network, and the host's real
 * disks, template catalog (on `imagesDir`), processes and clock.
 */
export function testPorts(o: { store: VmRepository; driver: HypervisorDriver; network: NetworkPort; imagesDir: string }): LifecyclePorts {
  return {
    store: o.store,
    driver: o.driver,
    network: o.network,
    disks: layerDisks,
    images: new TemplateCatalog(o.imagesDir),
    processes: hostProcesses,
    clock: { now: Date.now },
  };
}
