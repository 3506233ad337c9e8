// Marks VMs ready once their guest services answer, and lets a create wait for it. A VM that was
// just started is followed closely (probes a few tens of milliseconds apart at first, then less
// often): a seat restored from a snapshot answers almost at once, and a periodic sweep alone would
// add up to a second or two before anyone learns it is ready.
import { setTimeout as sleep } from 'node:timers/promises';
import type { GuestProbe } from './ports.ts';
import type { VmRecord } from './model.ts';
import type { VmManager } from './manager.ts';

export type Probe = GuestProbe;

/** The first pause between probes of a VM just started, and the longest (the sweep's pace). */
const FOLLOW_FIRST_PAUSE_MS = 25;
const FOLLOW_LONGEST_PAUSE_MS = 1_000;
/** After this a VM still not ready is left to the periodic sweep. */
const FOLLOW_FOR_MS = 10 * 60_000;

export class ReadinessTracker {
  private readonly probing = new Set<string>();
  private readonly following = new Set<string>();
  private stopped = false;

  constructor(
    private readonly manager: VmManager,
    private readonly probe: Probe,
  ) {}

  /** One pass: probe every running VM not yet ready; mark those whose services both answer. */
  async sweep(): Promise<void> {
    const pending = this.manager.list().filter((vm) => vm.status === 'running' && vm.readyAt === null);
    await Promise.all(pending.map((vm) => this.check(vm)));
  }

  /**
   * Probes a VM just started (created, or started again) until it is ready, stops running, or
   * FOLLOW_FOR_MS pass; the pause between probes grows from tens of milliseconds to a second.
   * Resolves when it stops following; never rejects (the periodic sweep is the fallback).
   */
  async follow(workshopId: string, seatId: number): Promise<void> {
    const key = `${workshopId}/${seatId}`;
    if (this.following.has(key) || this.stopped) return;
    this.following.add(key);
    try {
      const deadline = Date.now() + FOLLOW_FOR_MS;
      let pause = FOLLOW_FIRST_PAUSE_MS;
      while (!this.stopped && Date.now() < deadline) {
        const vm = this.current(workshopId, seatId);
        if (!vm || vm.status !== 'running' || vm.readyAt !== null) return;
        if (await this.check(vm)) return;
        await sleep(pause);
        pause = Math.min(FOLLOW_LONGEST_PAUSE_MS, pause * 1.5);
      }
    } catch {
      // The store closed under us (agent stopping) or a probe failed oddly: the sweep takes over.
    } finally {
      this.following.delete(key);
    }
  }

  /** No new probes after this (the agent is closing its store). */
  stop(): void {
    this.stopped = true;
  }

  private current(workshopId: string, seatId: number): VmRecord | undefined {
    return this.manager.list(workshopId).find((v) => v.seatId === seatId);
  }

  private async check(vm: VmRecord): Promise<boolean> {
    const key = `${vm.workshopId}/${vm.seatId}`;
    if (this.probing.has(key)) return false;
    this.probing.add(key);
    try {
      const health = await this.probe(vm.ip);
      if (!health.terminal || !health.files) return false;
      const current = this.current(vm.workshopId, vm.seatId);
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
      // Again each turn: a VM booted again while we wait is followed anew (a no-op while followed).
      void this.follow(workshopId, seatId);
      if (Date.now() >= deadline) throw new Error(`guest services did not answer within ${Math.round(timeoutMs / 1000)} s`);
      await sleep(Math.min(50, Math.max(1, deadline - Date.now())));
    }
  }
}
