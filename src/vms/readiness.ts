// Marks VMs ready once their guest services answer, and lets a create wait for it.
import { setTimeout as sleep } from 'node:timers/promises';
import type { GuestProbe } from './ports.ts';
import type { VmRecord } from './model.ts';
import type { VmManager } from './manager.ts';

export type Probe = GuestProbe;

export class ReadinessTracker {
  private readonly probing = new Set<string>();

  constructor(
    private readonly manager: VmManager,
    private readonly probe: Probe,
  ) {}

  /** One pass: probe every running VM not yet ready; mark those whose services both answer. */
  async sweep(): Promise<void> {
    const pending = this.manager.list().filter((vm) => vm.status === 'running' && vm.readyAt === null);
    await Promise.all(pending.map((vm) => this.check(vm)));
  }

  private async check(vm: VmRecord): Promise<boolean> {
    const key = `${vm.workshopId}/${vm.seatId}`;
    if (this.probing.has(key)) return false;
    this.probing.add(key);
    try {
      const health = await this.probe(vm.ip);
      if (!health.terminal || !health.files) return false;
      const current = this.manager.list(vm.workshopId).find((v) => v.seatId === vm.seatId);
      if (current?.status === 'running' && current.pid === vm.pid) this.manager.markReady(current);
      return true;
    } finally {
      this.probing.delete(key);
    }
  }

  /** Resolves with the VM once it is ready; rejects after `timeoutMs`. */
  async waitReady(workshopId: string, seatId: number, timeoutMs: number): Promise<VmRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = this.manager.get(workshopId, seatId);
      if (vm.readyAt !== null) return vm;
      if (vm.status === 'running') await this.check(vm);
      const after = this.manager.get(workshopId, seatId);
      if (after.readyAt !== null) return after;
      if (Date.now() >= deadline) throw new Error(`guest services did not answer within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(300);
    }
  }
}
