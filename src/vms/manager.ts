// The VM lifecycle: create, stop, start, delete, recover. Decides what happens to a seat's VM and in which
// order; how it happens is up to the ports (lifecycle-ports.ts) it is given.
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { KeyedLock } from './keyed-lock.ts';
import { unobserved, type LifecycleObserver, type LifecyclePorts, type OperationLog, type OperationOutcome } from './lifecycle-ports.ts';
import { VmError } from './errors.ts';
import { newSeedHex, prefixLength } from './identity.ts';
import { vmId, type StartMode, type VmRecord } from './model.ts';
import { runPlan, runTeardown, StepError } from './plan.ts';
import { bootPlan, networkPlan, recordedProcess, stopPlan, teardownPlan, type RestoreRequest, type VmPlanContext } from './plans.ts';
import type { GuestIdentity, ImageBuild, ReclaimCounts, SnapshotFiles, VmLaunchSpec, VmmProcess } from './ports.ts';
import { addCounts, killUnrecordedVmms, reclaimOrphans } from './reclaim.ts';
import { VmDirectories } from './vm-directory.ts';

export interface ManagerOptions {
  readonly ports: LifecyclePorts;
  readonly log: Logger;
  readonly stateDir: string;
  readonly capacity: number;
  /** Most memory (MiB) all VMs together may be given: host memory times the overcommit ratio. */
  readonly memoryBudgetMb?: number;
  readonly vmDiskMb: number;
  /** Extra kernel arguments every guest gets (e.g. DNS). */
  readonly extraKernelArgs?: string;
  /** Name servers a restored guest is given (a cold one has them in extraKernelArgs). */
  readonly guestDns?: readonly string[];
  readonly gracefulStopMs?: number;
  /** Told of every create, delete, readiness and recovery (metrics). */
  readonly observer?: LifecycleObserver;
}

export interface CreateRequest {
  readonly workshopId: string;
  readonly seatId: number;
  readonly vcpus: number;
  readonly memoryMb: number;
  /** The template to make it from (its current build). */
  readonly template: string;
}

export class VmManager {
  private readonly lock = new KeyedLock();
  /** VMs booted again by `start` whose readiness is still to come (not counted as new boots). */
  private readonly startedAgain = new Set<string>();
  private readonly dirs: VmDirectories;
  private readonly ports: LifecyclePorts;
  private readonly observer: LifecycleObserver;

  constructor(private readonly o: ManagerOptions) {
    this.ports = o.ports;
    this.observer = o.observer ?? unobserved;
    this.dirs = new VmDirectories(o.stateDir);
  }

  /** STATE_DIR/vms: one directory per VM. */
  get vmsDir(): string {
    return this.dirs.root;
  }

  list(workshopId?: string): VmRecord[] {
    return this.ports.store.list(workshopId);
  }

  get(workshopId: string, seatId: number): VmRecord {
    const vm = this.ports.store.get(workshopId, seatId);
    if (!vm) throw new VmError('vm_not_found', `no VM for workshop "${workshopId}" seat ${seatId}`);
    return vm;
  }

  count(): number {
    return this.ports.store.count();
  }

  launchSpec(vm: VmRecord): VmLaunchSpec {
    const { gateway, netmask } = this.ports.network.subnet;
    const ipArg = `ip=${vm.ip}::${gateway}:${netmask}:seat-${vm.seatId}:eth0:off`;
    // Always the build it was made from, never a newer one: its layer was written over that base.
    const images = this.ports.images.paths(vm.template, vm.buildId);
    return {
      id: vmId(vm.workshopId, vm.seatId),
      vcpus: vm.vcpus,
      memoryMb: vm.memoryMb,
      kernelPath: images.kernel,
      initrdPath: images.initrd,
      kernelArgs: [ipArg, this.o.extraKernelArgs ?? ''].join(' ').trim(),
      baseDiskPath: images.rootfs,
      layerDiskPath: this.dirs.layerPath(vm),
      tapName: vm.tapName,
      mac: vm.mac,
      runDir: this.dirs.dirOf(vm),
      consoleLogPath: this.dirs.consolePath(vm),
    };
  }

  /** The steps of a VM's plans, with the VMM recorded by `onStarted`. */
  planContext(vm: VmRecord, onStarted: (proc: VmmProcess) => void = () => undefined, restore?: RestoreRequest): VmPlanContext {
    return {
      ...(restore ? { restore } : {}),
      ports: this.ports,
      dirs: this.dirs,
      vm,
      spec: this.launchSpec(vm),
      vmDiskMb: this.o.vmDiskMb,
      gracefulStopMs: this.o.gracefulStopMs ?? 10_000,
      onStarted,
    };
  }

  /**
   * Creates and boots a VM. Resolves once the VMM runs the guest; on failure nothing is left.
   * `log` is the asker's (a request's, so its lines carry the request id).
   */
  create(request: CreateRequest, log: OperationLog = this.o.log): Promise<VmRecord> {
    return this.timed(
      () => this.createVm(request, log),
      (outcome, ms) => this.observer.createFinished(outcome, ms),
    );
  }

  /** Runs `operation`, then reports how it ended and how long it took. */
  private async timed<T>(operation: () => Promise<T>, report: (outcome: OperationOutcome, ms: number) => void): Promise<T> {
    const started = this.now();
    try {
      const result = await operation();
      report('ok', this.now() - started);
      return result;
    } catch (error) {
      report(error instanceof VmError ? error.code : 'error', this.now() - started);
      throw error;
    }
  }

  private async createVm(request: CreateRequest, requestLog: OperationLog): Promise<VmRecord> {
    const build = await this.ports.images.current(request.template);
    const vm = this.reserve(request, build);
    const id = vmId(vm.workshopId, vm.seatId);
    const log = requestLog.child({ vm: id, ip: vm.ip });
    return this.lock.with(id, async () => {
      try {
        const onStarted = (p: VmmProcess): void => this.ports.store.markRunning(vm.workshopId, vm.seatId, p.pid, p.startTime, this.now());
        const start = await this.startFrom(vm, build);
        let mode: StartMode = start.files ? 'snapshot' : 'cold';
        let reason = start.reason;
        const restore: RestoreRequest | undefined = start.files && {
          files: start.files,
          identity: this.identity(vm),
          onFallback: (why) => {
            mode = 'cold';
            reason = why;
            log.warn({ reason: why }, 'snapshot restore failed; booting cold');
          },
        };
        const report = await runPlan(bootPlan(this.planContext(vm, onStarted, restore)));
        this.ports.store.recordStart(vm.workshopId, vm.seatId, { mode, reason, stepsMs: report.ms });
        log.info(
          { tap: vm.tapName, template: vm.template, build: vm.buildId, start: mode, start_reason: reason, steps_ms: report.ms },
          'vm running',
        );
        void this.pruneBuilds();
        return this.get(vm.workshopId, vm.seatId);
      } catch (error) {
        log.error({ err: error }, 'create failed; removing what it made');
        const reason = error instanceof StepError ? error.message : String(error);
        try {
          await runTeardown(teardownPlan(this.planContext(this.get(vm.workshopId, vm.seatId))));
          this.ports.store.remove(vm.workshopId, vm.seatId);
        } catch (cleanup) {
          // Something could not be removed: the record stays (failed) so that DELETE or the next
          // start finishes the job, instead of leaving debris nobody knows about. The next start
          // must undo it, not boot it: the caller was told the create failed.
          log.error({ err: cleanup }, 'cleanup after failed create');
          this.ports.store.markFailed(vm.workshopId, vm.seatId, `${reason}; cleanup: ${(cleanup as Error).message}`, true);
        }
        throw new VmError('create_failed', reason);
      }
    });
  }

  /** The snapshot a new VM starts from, or why it boots cold (and the snapshot is then asked for). */
  private async startFrom(vm: VmRecord, build: ImageBuild): Promise<{ files?: SnapshotFiles; reason: string | null }> {
    const snapshots = this.ports.snapshots;
    if (!snapshots) return { reason: 'snapshot start is off' };
    if (!this.ports.driver.snapshots) return { reason: `the ${this.ports.driver.info.name} driver has no snapshot start` };
    const key = { template: vm.template, buildId: vm.buildId, vcpus: vm.vcpus, memoryMb: vm.memoryMb };
    const found = await snapshots.find(key);
    if ('files' in found) return { files: found.files, reason: null };
    snapshots.request(key, build);
    return { reason: found.missing };
  }

  /** Who a restored guest is: the same address, MAC and host name a cold boot gets, and fresh entropy. */
  private identity(vm: VmRecord): GuestIdentity {
    const { gateway, netmask } = this.ports.network.subnet;
    return {
      ip: vm.ip,
      prefixLength: prefixLength(netmask) ?? 24,
      gateway,
      mac: vm.mac,
      hostname: `seat-${vm.seatId}`,
      dns: this.o.guestDns ?? [],
      seedHex: newSeedHex(),
      epochMs: this.now(),
    };
  }

  private reserve(request: CreateRequest, build: ImageBuild): VmRecord {
    const reserved = this.ports.store.reserve(
      {
        workshopId: request.workshopId,
        seatId: request.seatId,
        vcpus: request.vcpus,
        memoryMb: request.memoryMb,
        hypervisor: this.ports.driver.info.name,
        template: build.template,
        buildId: build.buildId,
      },
      { capacity: this.o.capacity, memoryBudgetMb: this.o.memoryBudgetMb ?? Number.MAX_SAFE_INTEGER },
      this.ports.network.addressing,
      this.now(),
    );
    if (reserved.ok) return reserved.vm;
    switch (reserved.reason) {
      case 'exists':
        throw new VmError('vm_exists', `workshop "${request.workshopId}" seat ${request.seatId} already has a VM`);
      case 'at_capacity':
        throw new VmError('at_capacity', `this worker already runs its capacity of ${this.o.capacity} VMs`);
      case 'no_address':
        throw new VmError('at_capacity', `no free address left in ${this.ports.network.subnet.text}`);
      case 'memory':
        throw new VmError(
          'insufficient_memory',
          `${request.memoryMb} MiB more would overcommit this host: ${reserved.committedMb} of ${this.o.memoryBudgetMb} MiB (host memory x MEMORY_OVERCOMMIT) are given to VMs`,
        );
    }
  }

  /** Stops the guest (gracefully, then by force) and removes its TAP, disk and record. */
  delete(workshopId: string, seatId: number, log: OperationLog = this.o.log): Promise<void> {
    return this.timed(
      () => this.deleteVm(workshopId, seatId, log),
      (outcome, ms) => this.observer.deleteFinished(outcome, ms),
    );
  }

  private async deleteVm(workshopId: string, seatId: number, log: OperationLog): Promise<void> {
    this.get(workshopId, seatId);
    await this.lock.with(vmId(workshopId, seatId), async () => {
      const vm = this.get(workshopId, seatId);
      this.ports.store.markDeleting(workshopId, seatId);
      try {
        await runTeardown(teardownPlan(this.planContext(vm)));
      } catch (error) {
        // The record stays `deleting`: a DELETE again, or the next start, finishes the job.
        throw new VmError('delete_failed', error instanceof Error ? error.message : String(error));
      }
      this.ports.store.remove(workshopId, seatId);
      log.info({ vm: vmId(workshopId, seatId) }, 'vm deleted');
    });
    void this.pruneBuilds();
  }

  /**
   * Stops the VM's VMM and keeps everything else (disk, address, TAP, record): an idle seat gives
   * back its CPU and memory until `start`. Stopping a stopped VM does nothing.
   */
  async stop(workshopId: string, seatId: number, log: OperationLog = this.o.log): Promise<VmRecord> {
    this.get(workshopId, seatId);
    const id = vmId(workshopId, seatId);
    return this.lock.with(id, async () => {
      const vm = this.get(workshopId, seatId);
      if (vm.status === 'stopped') return vm;
      if (vm.status !== 'running') throw new VmError('vm_busy', `the VM is ${vm.status}: only a running VM can be stopped`);
      this.ports.store.markStopRequested(workshopId, seatId);
      try {
        await runTeardown(stopPlan(this.planContext(vm)));
      } catch (error) {
        // A step after the kill failed (a cgroup, a jail): with its VMM gone the VM is stopped all
        // the same, and marking it running would have the watchdog boot it again.
        const proc = recordedProcess(vm);
        if (proc && this.ports.driver.isAlive(proc)) {
          this.ports.store.cancelStop(workshopId, seatId);
          throw new VmError('vm_busy', `could not stop the VM: ${(error as Error).message}`);
        }
        log.warn({ vm: id, err: error }, 'the VMM is gone though its stop reported an error; the VM is stopped');
      }
      this.ports.store.markStopped(workshopId, seatId, null);
      log.info({ vm: id }, 'vm stopped; its disk is kept');
      return this.get(workshopId, seatId);
    });
  }

  /**
   * Boots a stopped VM again, cold, from its own layer over the build it was made from (its files
   * as they were). Resolves once the VMM runs; starting a running VM does nothing.
   */
  async start(workshopId: string, seatId: number, log: OperationLog = this.o.log): Promise<VmRecord> {
    this.get(workshopId, seatId);
    const id = vmId(workshopId, seatId);
    return this.lock.with(id, async () => {
      const vm = this.get(workshopId, seatId);
      if (vm.status === 'running') return vm;
      if (vm.status !== 'stopped') throw new VmError('vm_busy', `the VM is ${vm.status}: only a stopped VM can be started`);
      // Recorded as running first: an agent that crashes mid-start boots it on its next start.
      this.ports.store.markStarting(workshopId, seatId);
      this.startedAgain.add(id);
      try {
        const onStarted = (p: VmmProcess): void => this.ports.store.markRunning(workshopId, seatId, p.pid, p.startTime, this.now());
        const report = await runPlan(bootPlan(this.planContext(this.get(workshopId, seatId), onStarted)));
        log.info({ vm: id, steps_ms: report.ms }, 'vm started again from its disk');
        return this.get(workshopId, seatId);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        this.startedAgain.delete(id); // else a later new VM of this seat would miss the create-to-ready metric
        const current = this.get(workshopId, seatId);
        await runTeardown(stopPlan(this.planContext(current))).catch(() => undefined);
        this.ports.store.markStopped(workshopId, seatId, `start failed: ${reason}`);
        log.error({ vm: id, reason }, 'could not start the VM');
        throw new VmError('start_failed', reason);
      }
    });
  }

  /** Removes the template builds no VM uses any more (never a template's current one). */
  async pruneBuilds(): Promise<void> {
    try {
      const removed = await this.ports.images.prune(() => new Set(this.list().map((vm) => `${vm.template}/${vm.buildId}`)));
      if (removed.length > 0) this.o.log.info({ builds: removed }, 'template builds no VM uses removed');
      // New seats start from current builds only: snapshots of older ones are of no use.
      const current = (await this.ports.images.list()).flatMap((t) => (t.currentBuild === null ? [] : [`${t.name}/${t.currentBuild}`]));
      await this.ports.snapshots?.prune(new Set(current));
    } catch (error) {
      this.o.log.warn({ err: error }, 'could not remove unused template builds');
    }
  }

  /** The last `bytes` of the guest's serial console. */
  consoleTail(workshopId: string, seatId: number, bytes: number): Promise<string> {
    return this.dirs.consoleTail(this.get(workshopId, seatId), bytes);
  }

  markReady(vm: VmRecord): void {
    const now = this.now();
    this.ports.store.markReady(vm.workshopId, vm.seatId, now);
    // Create-to-ready is a new VM's boot time; a VM booted again after a crash or a stop is not new.
    const again = this.startedAgain.delete(vmId(vm.workshopId, vm.seatId));
    if (vm.readyAt === null && vm.restarts === 0 && !again) this.observer.becameReady(now - vm.createdAt);
  }

  /**
   * Brings the host in line with the store, as on start-up: adopts live VMMs, boots again from
   * its kept disk every VM whose VMM died, finishes interrupted creates (by undoing them) and
   * deletes, and removes what no VM owns. Returns what it removed, by kind (also logged, once).
   */
  async reconcile(): Promise<ReclaimCounts> {
    // STATE_DIR/vms exists from the start, whether or not a VM was ever made.
    await mkdir(this.dirs.root, { recursive: true });
    const deps = { ports: this.ports, dirs: this.dirs, log: this.o.log };
    // First the VMM processes no record names (e.g. one started just before a crash): a VM booted
    // again below must not meet an older VMM still holding its TAP and disk.
    const early = await killUnrecordedVmms(deps, this.list());
    for (const vm of this.list()) await this.lock.with(vmId(vm.workshopId, vm.seatId), () => this.settle(vm));
    const counts = addCounts(early, await reclaimOrphans(deps, this.list()));
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    this.o.log[total > 0 ? 'warn' : 'info']({ reclaimed: counts }, `reclaimed ${total} orphaned resources`);
    return counts;
  }

  /** One recorded VM at start-up: an interrupted create or delete, or a failed create, is undone; anything else recovered. */
  private async settle(vm: VmRecord): Promise<void> {
    const current = this.ports.store.get(vm.workshopId, vm.seatId);
    if (!current) return;
    const id = vmId(vm.workshopId, vm.seatId);
    if (current.status === 'stopped') {
      // A stop the last agent did not finish (its VMM still recorded): finished here, not undone.
      if (recordedProcess(current)) {
        this.o.log.warn({ vm: id }, 'finishing an interrupted stop');
        await runTeardown(stopPlan(this.planContext(current))).catch((e: unknown) => this.o.log.error({ err: e, vm: id }, 'stop failed'));
        this.ports.store.markStopped(current.workshopId, current.seatId, null);
      }
      return; // stays stopped until a start
    }
    if (current.status === 'creating' || current.status === 'deleting' || (current.status === 'failed' && current.undoOnStart)) {
      this.o.log.warn({ vm: id, status: current.status }, 'finishing an interrupted operation by removing the VM');
      await runTeardown(teardownPlan(this.planContext(current))).catch((e: unknown) =>
        this.o.log.error({ err: e, vm: id }, 'teardown failed'),
      );
      this.ports.store.remove(current.workshopId, current.seatId);
      return;
    }
    await this.recover(current);
  }

  /** Boots again any running VM whose VMM has died (guest powered off, VMM crashed). */
  async watch(): Promise<void> {
    for (const vm of this.list()) {
      const id = vmId(vm.workshopId, vm.seatId);
      if (vm.status !== 'running' || this.lock.isHeld(id)) continue;
      const proc = recordedProcess(vm);
      if (proc && this.ports.driver.isAlive(proc)) {
        // The VM may be deleted meanwhile (trimming runs outside its lock): never fatal for the pass.
        await this.dirs.trimConsole(vm).catch(() => undefined);
        continue;
      }
      await this.lock.with(id, async () => {
        const current = this.ports.store.get(vm.workshopId, vm.seatId);
        if (current?.status === 'running') await this.recover(current);
      });
    }
  }

  private async recover(vm: VmRecord): Promise<void> {
    const id = vmId(vm.workshopId, vm.seatId);
    const proc = recordedProcess(vm);
    if (proc && this.ports.driver.isAlive(proc)) {
      await runPlan(networkPlan(this.planContext(vm))).catch((e: unknown) => this.o.log.error({ err: e, vm: id }, 'network repair failed'));
      this.o.log.info({ vm: id, pid: proc.pid }, 'adopted running VM');
      this.observer.recovered('adopted');
      return;
    }
    this.o.log.warn({ vm: id }, 'VMM is gone; booting the VM again from its disk');
    try {
      const onStarted = (p: VmmProcess): void => this.ports.store.markRestarted(vm.workshopId, vm.seatId, p.pid, p.startTime);
      await runPlan(bootPlan(this.planContext(vm, onStarted)));
      this.observer.recovered('restarted');
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      this.o.log.error({ vm: id, reason }, 'could not boot the VM again');
      this.ports.store.markFailed(vm.workshopId, vm.seatId, reason);
      this.observer.recovered('failed');
    }
  }

  private now(): number {
    return this.ports.clock.now();
  }
}
