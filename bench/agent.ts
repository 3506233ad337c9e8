// A real agent process for the benchmarks (QEMU guests, in the network namespace bench/run.ts
// made), with helpers to create seats and read what the agent logged about them.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, startAgent, type AgentProcess } from '../test/support/agent-process.ts';

export interface VmJson {
  readonly workshop_id: string;
  readonly seat_id: number;
  readonly ip: string;
  readonly pid: number;
  readonly ready: boolean;
  readonly status: string;
  readonly start: 'snapshot' | 'cold';
  readonly timeline: { readonly running_ms: number | null; readonly ready_ms: number | null };
}

export class BenchAgent {
  private constructor(readonly process: AgentProcess) {}

  static async start(port: number, env: Record<string, string> = {}): Promise<BenchAgent> {
    return new BenchAgent(await startAgent({ port, env: { CAPACITY: '60', LOG_LEVEL: 'info', ...env } }));
  }

  get url(): string {
    return this.process.url;
  }

  get pid(): number {
    return this.process.child.pid ?? -1;
  }

  /** POST /vms, waiting until the VMM runs; the client's view of how long that took. */
  async create(workshopId: string, seatId: number, extra: Record<string, unknown> = {}): Promise<{ vm: VmJson; clientMs: number }> {
    const started = performance.now();
    const res = await this.process.api('/vms', json({ workshop_id: workshopId, seat_id: seatId, ...extra }));
    const clientMs = performance.now() - started;
    const text = await res.text();
    if (res.status !== 201) throw new Error(`create ${workshopId}/${seatId}: ${res.status} ${text}`);
    return { vm: JSON.parse(text) as VmJson, clientMs };
  }

  async get(workshopId: string, seatId: number): Promise<VmJson> {
    return (await (await this.process.api(`/vms/${workshopId}/${seatId}`)).json()) as VmJson;
  }

  async waitReady(workshopId: string, seatId: number, timeoutMs = 300_000): Promise<VmJson> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = await this.get(workshopId, seatId);
      if (vm.ready) return vm;
      if (Date.now() > deadline) throw new Error(`${workshopId}/${seatId} not ready after ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  async delete(workshopId: string, seatId: number): Promise<number> {
    const started = performance.now();
    const res = await this.process.api(`/vms/${workshopId}/${seatId}`, { method: 'DELETE' });
    if (res.status !== 204) throw new Error(`delete ${workshopId}/${seatId}: ${res.status} ${await res.text()}`);
    return performance.now() - started;
  }

  /** The boot plan's step timings the agent logged for this VM's latest create (its log reaches the file a moment later). */
  async stepsMs(workshopId: string, seatId: number): Promise<Record<string, number>> {
    for (let attempt = 0; attempt < 40; attempt++) {
      const lines = readFileSync(this.process.logPath, 'utf8').split('\n').reverse();
      const line = lines.find((l) => l.includes('"msg":"vm running"') && l.includes(`"vm":"${workshopId}.${seatId}"`));
      if (line) return (JSON.parse(line) as { steps_ms?: Record<string, number> }).steps_ms ?? {};
      await sleep(50);
    }
    throw new Error(`the agent logged no "vm running" for ${workshopId}.${seatId}`);
  }

  /** Waits until the default template's current build has a ready snapshot. */
  async waitSnapshot(timeoutMs = 300_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const body = (await (await this.process.api('/templates')).json()) as {
        templates: { name: string; builds: { current: boolean; snapshots: { state: string; error: string | null }[] }[] }[];
      };
      const snapshot = body.templates.find((t) => t.name === 'default')?.builds.find((b) => b.current)?.snapshots[0];
      if (snapshot?.state === 'ready') return;
      if (snapshot?.state === 'failed') throw new Error(`the snapshot failed: ${snapshot.error}`);
      if (Date.now() > deadline) throw new Error('no snapshot in time');
      await sleep(500);
    }
  }

  /** How many full (mark-compact) garbage collections the agent's main heap has run, from its /metrics. */
  async fullCollections(): Promise<number> {
    const text = await (await this.process.api('/metrics')).text();
    const line = text.split('\n').find((l) => l.startsWith('clarateach_nodejs_gc_duration_seconds_count{kind="major"}'));
    return Number(line?.split(' ').at(-1) ?? NaN);
  }

  async stop(): Promise<void> {
    for (const vm of ((await (await this.process.api('/vms')).json()) as { vms: VmJson[] }).vms) {
      await this.process.api(`/vms/${vm.workshop_id}/${vm.seat_id}`, { method: 'DELETE' });
    }
    await this.process.kill('SIGTERM');
  }
}
