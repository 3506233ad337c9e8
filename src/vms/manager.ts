// The VM lifecycle: create, delete, recover. Owns the store and drives the network, disk and
// hypervisor parts through plans of idempotent steps.
import { mkdir, readdir, rm, stat, open, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { HypervisorDriver, VmLaunchSpec, VmmProcess } from './ports.ts';
import { findProcessesUnder, isProcessAlive, killProcess } from '../host/process.ts';
import type { Cidr } from '../network/cidr.ts';
import type { NetworkPort, VmEndpoint } from '../network/index.ts';
import { allocateIp, intToIp, macForIp, tapNameForIp } from '../network/cidr.ts';
import { ensureLayerDisk } from '../disks/layer.ts';
import { KeyedLock } from './keyed-lock.ts';
import { runPlan, runTeardown, StepError, type Step } from './plan.ts';
import { VmError } from './errors.ts';
import { vmId, type VmRecord } from './model.ts';
import type { Addressing, VmStore } from '../store/vm-store.ts';

export interface ManagerOptions {
  readonly store: VmStore;
  readonly driver: HypervisorDriver;
  readonly network: NetworkPort;
  readonly log: Logger;
  readonly stateDir: string;
  readonly imagesDir: string;
  readonly bridgeName: string;
  readonly bridgeCidr: Cidr;
  readonly capacity: number;
  /** Most memory (MiB) all VMs together may be given: host memory times the overcommit ratio. */
  readonly memoryBudgetMb?: number;
  readonly vmDiskMb: number;
  /** Extra kernel arguments every guest gets (e.g. DNS). */
  readonly extraKernelArgs?: string;
  readonly gracefulStopMs?: number;
  readonly now?: () => number;
}

export interface CreateRequest {
  readonly workshopId: string;
  readonly seatId: number;
  readonly vcpus: number;
  readonly memoryMb: number;
}

/** TAP names this agent creates (see tapNameForIp). */
export const TAP_PATTERN = /^ct[0-9a-f]{8}$/;
const CONSOLE_KEEP_BYTES = 1024 * 1024;
const CONSOLE_TRIM_AT_BYTES = 8 * 1024 * 1024;

export function endpoint(vm: VmRecord): VmEndpoint {
  return { tap: vm.tapName, mac: vm.mac, ip: vm.ip };
}

export class VmManager {
  private readonly lock = new KeyedLock();
  private readonly addressing: Addressing;
  private readonly now: () => number;

  constructor(private readonly o: ManagerOptions) {
    this.now = o.now ?? Date.now;
    const cidr = o.bridgeCidr;
    this.addressing = {
      allocate: (seat, used) => allocateIp(cidr, seat, used),
      ipText: intToIp,
      mac: macForIp,
      tapName: tapNameForIp,
    };
  }

  get vmsDir(): string {
    return join(this.o.stateDir, 'vms');
  }

  /** Named after the (unique, 10-character) TAP so socket paths stay within sun_path's 108 bytes. */
  vmDir(vm: Pick<VmRecord, 'tapName'>): string {
    return join(this.vmsDir, vm.tapName);
  }

  list(workshopId?: string): VmRecord[] {
    return this.o.store.list(workshopId);
  }

  get(workshopId: string, seatId: number): VmRecord {
    const vm = this.o.store.get(workshopId, seatId);
    if (!vm) throw new VmError('vm_not_found', `no VM for workshop "${workshopId}" seat ${seatId}`);
    return vm;
  }

  count(): number {
    return this.o.store.count();
  }

  launchSpec(vm: VmRecord): VmLaunchSpec {
    const dir = this.vmDir(vm);
    const cidr = this.o.bridgeCidr;
    const hostname = `seat-${vm.seatId}`;
    const ipArg = `ip=${vm.ip}::${cidr.address}:${cidr.netmask}:${hostname}:eth0:off`;
    return {
      id: vmId(vm.workshopId, vm.seatId),
      vcpus: vm.vcpus,
      memoryMb: vm.memoryMb,
      kernelPath: join(this.o.imagesDir, 'vmlinux'),
      initrdPath: join(this.o.imagesDir, 'initrd.img'),
      kernelArgs: [ipArg, this.o.extraKernelArgs ?? ''].join(' ').trim(),
      baseDiskPath: join(this.o.imagesDir, 'rootfs.ext4'),
      layerDiskPath: join(dir, 'layer.ext4'),
      tapName: vm.tapName,
      mac: vm.mac,
      runDir: dir,
      consoleLogPath: join(dir, 'console.log'),
    };
  }

  /** Creates and boots a VM. Resolves once the VMM runs the guest; on failure nothing is left. */
  async create(request: CreateRequest): Promise<VmRecord> {
    const reserved = this.o.store.reserve(
      { ...request, hypervisor: this.o.driver.info.name },
      { capacity: this.o.capacity, memoryBudgetMb: this.o.memoryBudgetMb ?? Number.MAX_SAFE_INTEGER },
      this.addressing,
      this.now(),
    );
    if (!reserved.ok) {
      switch (reserved.reason) {
        case 'exists':
          throw new VmError('vm_exists', `workshop "${request.workshopId}" seat ${request.seatId} already has a VM`);
        case 'at_capacity':
          throw new VmError('at_capacity', `this worker already runs its capacity of ${this.o.capacity} VMs`);
        case 'no_address':
          throw new VmError('at_capacity', `no free address left in ${this.o.bridgeCidr.text}`);
        case 'memory':
          throw new VmError(
            'insufficient_memory',
            `${request.memoryMb} MiB more would overcommit this host: ${reserved.committedMb} of ${this.o.memoryBudgetMb} MiB (host memory x MEMORY_OVERCOMMIT) are given to VMs`,
          );
      }
    }
    const vm = reserved.vm;
    const log = this.o.log.child({ vm: vmId(vm.workshopId, vm.seatId), ip: vm.ip });
    return this.lock.with(vmId(vm.workshopId, vm.seatId), async () => {
      try {
        await runPlan(this.bootPlan(vm, 'create'));
        log.info({ tap: vm.tapName }, 'vm running');
        return this.get(vm.workshopId, vm.seatId);
      } catch (error) {
        log.error({ err: error }, 'create failed; removing what it made');
        const reason = error instanceof StepError ? error.message : String(error);
        try {
          await this.teardown(vm);
          this.o.store.remove(vm.workshopId, vm.seatId);
        } catch (cleanup) {
          // Something could not be removed: the record stays (failed) so that DELETE or the next
          // start finishes the job, instead of leaving debris nobody knows about.
          log.error({ err: cleanup }, 'cleanup after failed create');
          this.o.store.markFailed(vm.workshopId, vm.seatId, `${reason}; cleanup: ${(cleanup as Error).message}`);
        }
        throw new VmError('create_failed', reason);
      }
    });
  }

  /** Stops the guest (gracefully, then by force) and removes its TAP, disk and record. */
  async delete(workshopId: string, seatId: number): Promise<void> {
    this.get(workshopId, seatId);
    await this.lock.with(vmId(workshopId, seatId), async () => {
      const vm = this.o.store.get(workshopId, seatId);
      if (!vm) throw new VmError('vm_not_found', `no VM for workshop "${workshopId}" seat ${seatId}`);
      this.o.store.markDeleting(workshopId, seatId);
      try {
        await this.teardown(vm);
      } catch (error) {
        // The record stays `deleting`: a DELETE again, or the next start, finishes the job.
        throw new VmError('delete_failed', error instanceof Error ? error.message : String(error));
      }
      this.o.store.remove(workshopId, seatId);
      this.o.log.info({ vm: vmId(workshopId, seatId) }, 'vm deleted');
    });
  }

  /** The last `bytes` of the guest's serial console. */
  async consoleTail(workshopId: string, seatId: number, bytes: number): Promise<string> {
    const path = this.launchSpec(this.get(workshopId, seatId)).consoleLogPath;
    let handle;
    try {
      handle = await open(path, 'r');
    } catch {
      return '';
    }
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, bytes);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return buffer.toString('utf8');
    } finally {
      await handle.close();
    }
  }

  markReady(vm: VmRecord): void {
    this.o.store.markReady(vm.workshopId, vm.seatId, this.now());
  }

  /**
   * Brings the host in line with the store, as on start-up: adopts live VMMs, boots again from
   * its kept disk every VM whose VMM died, finishes interrupted creates (by undoing them) and
   * deletes, and removes TAPs, directories and processes that no VM owns.
   */
  async reconcile(): Promise<void> {
    // First the VMM processes no record names (e.g. one started just before a crash): a VM booted
    // again below must not meet an older VMM still holding its TAP and disk.
    await this.killUnrecordedVmms();
    for (const vm of this.o.store.list()) {
      const id = vmId(vm.workshopId, vm.seatId);
      await this.lock.with(id, async () => {
        const current = this.o.store.get(vm.workshopId, vm.seatId);
        if (!current) return;
        if (current.status === 'creating' || current.status === 'deleting') {
          this.o.log.warn({ vm: id, status: current.status }, 'finishing an interrupted operation by removing the VM');
          await this.teardown(current).catch((e: unknown) => this.o.log.error({ err: e, vm: id }, 'teardown failed'));
          this.o.store.remove(current.workshopId, current.seatId);
          return;
        }
        await this.recover(current);
      });
    }
    await this.removeOrphans();
  }

  /** Boots again any running VM whose VMM has died (guest powered off, VMM crashed). */
  async watch(): Promise<void> {
    for (const vm of this.o.store.list()) {
      const id = vmId(vm.workshopId, vm.seatId);
      if (vm.status !== 'running' || this.lock.isHeld(id)) continue;
      if (vm.pid !== null && vm.pidStartTime !== null && isProcessAlive({ pid: vm.pid, startTime: vm.pidStartTime })) {
        // The VM may be deleted meanwhile (trimming runs outside its lock): never fatal for the pass.
        await this.trimConsole(this.launchSpec(vm).consoleLogPath).catch(() => undefined);
        continue;
      }
      await this.lock.with(id, async () => {
        const current = this.o.store.get(vm.workshopId, vm.seatId);
        if (current?.status === 'running') await this.recover(current);
      });
    }
  }

  private async recover(vm: VmRecord): Promise<void> {
    const id = vmId(vm.workshopId, vm.seatId);
    const proc = this.processOf(vm);
    if (proc && isProcessAlive(proc)) {
      await runPlan(this.networkPlan(vm)).catch((e: unknown) => this.o.log.error({ err: e, vm: id }, 'network repair failed'));
      this.o.log.info({ vm: id, pid: proc.pid }, 'adopted running VM');
      return;
    }
    this.o.log.warn({ vm: id }, 'VMM is gone; booting the VM again from its disk');
    try {
      await runPlan(this.bootPlan(vm, 'restart'));
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.o.log.error({ vm: id, reason }, 'could not boot the VM again');
      this.o.store.markFailed(vm.workshopId, vm.seatId, reason);
    }
  }

  private processOf(vm: VmRecord): VmmProcess | undefined {
    return vm.pid !== null && vm.pidStartTime !== null ? { pid: vm.pid, startTime: vm.pidStartTime } : undefined;
  }

  private networkPlan(vm: VmRecord): Step[] {
    return [
      { name: 'bridge', ensure: () => this.o.network.ensureBridge(this.o.bridgeName, this.o.bridgeCidr) },
      {
        name: 'tap',
        ensure: async () => this.o.network.attach(endpoint(vm), this.o.bridgeName, await this.o.driver.vmmOwner?.(this.launchSpec(vm))),
      },
    ];
  }

  private bootPlan(vm: VmRecord, mode: 'create' | 'restart'): Step[] {
    const spec = this.launchSpec(vm);
    return [
      ...this.networkPlan(vm),
      {
        name: 'vm directory',
        ensure: async () => {
          await mkdir(spec.runDir, { recursive: true, mode: 0o750 });
          // For people looking around STATE_DIR: which seat this directory belongs to.
          await writeFile(
            join(spec.runDir, 'seat.json'),
            `${JSON.stringify({ workshop_id: vm.workshopId, seat_id: vm.seatId, ip: vm.ip })}\n`,
          );
        },
      },
      { name: 'writable layer', ensure: () => ensureLayerDisk(spec.layerDiskPath, this.o.vmDiskMb) },
      { name: 'images', ensure: () => this.checkImages(spec) },
      {
        name: 'vmm',
        ensure: async () => {
          const proc = this.processOf(vm);
          if (proc && isProcessAlive(proc)) return;
          const started = await this.o.driver.start(spec);
          if (mode === 'create') this.o.store.markRunning(vm.workshopId, vm.seatId, started.pid, started.startTime, this.now());
          else this.o.store.markRestarted(vm.workshopId, vm.seatId, started.pid, started.startTime);
        },
      },
    ];
  }

  private async checkImages(spec: VmLaunchSpec): Promise<void> {
    for (const path of [spec.kernelPath, spec.initrdPath, spec.baseDiskPath]) {
      // stat, not lstat: a dangling symlink is as missing as no file.
      if (
        !(await stat(path).then(
          () => true,
          () => false,
        ))
      )
        throw new Error(`${path} is missing: run \`clarateach image build\``);
    }
  }

  /** Stops the VMM and removes the TAP and the VM's directory (disk, sockets, console). */
  private teardown(vm: VmRecord): Promise<void> {
    const spec = this.launchSpec(vm);
    return runTeardown([
      {
        name: 'stop vmm',
        ensure: async () => {
          // Also for a VMM that already died: the driver still removes its cgroup, jail, sockets.
          const proc = this.processOf(vm);
          if (proc) await this.o.driver.stop(spec, proc, isProcessAlive(proc) ? (this.o.gracefulStopMs ?? 10_000) : 0);
          // A VMM started by a create that crashed before recording its pid.
          for (const stray of await findProcessesUnder(spec.runDir)) await killProcess(stray.proc);
        },
      },
      { name: 'remove tap', ensure: () => this.o.network.detach(endpoint(vm), this.o.bridgeName) },
      { name: 'remove vm directory', ensure: () => rm(spec.runDir, { recursive: true, force: true }) },
    ]);
  }

  private async killUnrecordedVmms(): Promise<void> {
    const known = this.o.store.list();
    for (const { proc } of await findProcessesUnder(this.vmsDir)) {
      if (known.some((vm) => vm.pid === proc.pid && vm.pidStartTime === proc.startTime)) continue;
      this.o.log.warn({ pid: proc.pid }, 'killing VMM process that no VM owns');
      await killProcess(proc);
    }
  }

  private async removeOrphans(): Promise<void> {
    await this.killUnrecordedVmms();
    await this.o.driver.removeOrphans?.(new Set(this.o.store.list().map((vm) => vmId(vm.workshopId, vm.seatId))));
    // A VM's TAP and directory are both named after its address: one set says what is owned.
    const owned = new Set(this.o.store.list().map((vm) => vm.tapName));
    for (const tap of await this.o.network.listTaps(TAP_PATTERN)) {
      if (owned.has(tap)) continue;
      this.o.log.warn({ tap }, 'removing TAP that no VM owns');
      await this.o.network.deleteTap(tap);
    }
    let entries: string[] = [];
    try {
      entries = await readdir(this.vmsDir);
    } catch {
      return;
    }
    for (const entry of entries) {
      if (owned.has(entry)) continue;
      this.o.log.warn({ dir: entry }, 'removing VM directory that no VM owns');
      await rm(join(this.vmsDir, entry), { recursive: true, force: true });
    }
  }

  /** Keeps console logs bounded: past 8 MiB only the last 1 MiB is kept. */
  private async trimConsole(path: string): Promise<void> {
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      return;
    }
    if (size <= CONSOLE_TRIM_AT_BYTES) return;
    const handle = await open(path, 'r');
    const tail = Buffer.alloc(CONSOLE_KEEP_BYTES);
    try {
      await handle.read(tail, 0, CONSOLE_KEEP_BYTES, size - CONSOLE_KEEP_BYTES);
    } finally {
      await handle.close();
    }
    // The VMM appends with O_APPEND, so truncating under it is safe.
    await truncate(path, 0);
    const out = await open(path, 'a');
    try {
      await out.write(tail);
    } finally {
      await out.close();
    }
  }
}
