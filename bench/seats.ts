// Create → running and create → ready, cold and restored from a snapshot, one seat at a time and
// ten at once, with the agent's own share of a create (all but the VMM's start or restore) and
// the VMM's memory per idle seat. Cold is the baseline of every snapshot figure.
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchAgent } from './agent.ts';
import { median, memoryOf, mib, ms, p95, type Results } from './stats.ts';

export interface SeatFigures {
  /** Median create → running of one seat (cold: the baseline of the scale section). */
  readonly runningMs: number;
  readonly readyMs: number;
  readonly agentShareMs: number;
  readonly rss: number;
  readonly pss: number;
  readonly tenRunningMs: number;
  readonly tenReadyMs: number;
  readonly starts: string;
}

export type MeasuredSeats = SeatFigures & { readonly raw: Record<string, number[]> };

/** One seat at a time `runs` times, then ten at once, on `agent` (cold or snapshot start as it is set). */
export async function measureSeats(agent: BenchAgent, label: string, runs = 5): Promise<MeasuredSeats> {
  process.stdout.write(`\n## seats (${label}): create → running / ready\n`);
  const running: number[] = [];
  const ready: number[] = [];
  const agentShare: number[] = [];
  const rss: number[] = [];
  const pss: number[] = [];
  const starts = new Map<string, number>();
  const ws = `bench-${label}`;
  for (let i = 1; i <= runs; i++) {
    const { vm, clientMs } = await agent.create(ws, i);
    const steps = await agent.stepsMs(ws, i);
    agentShare.push(clientMs - (steps['vmm'] ?? 0));
    const done = await agent.waitReady(ws, i);
    starts.set(done.start, (starts.get(done.start) ?? 0) + 1);
    running.push(done.timeline.running_ms ?? NaN);
    ready.push(done.timeline.ready_ms ?? NaN);
    await sleep(2_000); // idle: what a seat costs while its learner reads the instructions
    const memory = await memoryOf(vm.pid);
    rss.push(memory.rss);
    pss.push(memory.pss);
    await agent.delete(ws, i);
  }
  // Ten at once; PSS read while all ten are idle shows what restored seats share.
  const ten = Array.from({ length: 10 }, (_, i) => i + 1);
  const tenWs = `${ws}-ten`;
  const made = await Promise.all(ten.map((seat) => agent.create(tenWs, seat)));
  const tenReady = await Promise.all(ten.map((seat) => agent.waitReady(tenWs, seat)));
  for (const vm of tenReady) starts.set(vm.start, (starts.get(vm.start) ?? 0) + 1);
  await sleep(2_000);
  const tenMemory = await Promise.all(made.map(({ vm }) => memoryOf(vm.pid)));
  await Promise.all(ten.map((seat) => agent.delete(tenWs, seat)));
  return {
    runningMs: median(running),
    readyMs: median(ready),
    agentShareMs: median(agentShare),
    rss: median(rss),
    pss: median(pss),
    tenRunningMs: median(tenReady.map((vm) => vm.timeline.running_ms ?? NaN)),
    tenReadyMs: median(tenReady.map((vm) => vm.timeline.ready_ms ?? NaN)),
    starts: [...starts].map(([mode, n]) => `${n} ${mode}`).join(', '),
    raw: {
      running,
      ready,
      tenRunning: tenReady.map((vm) => vm.timeline.running_ms ?? NaN),
      tenReady: tenReady.map((vm) => vm.timeline.ready_ms ?? NaN),
      tenPss: tenMemory.map((m) => m.pss),
      tenRss: tenMemory.map((m) => m.rss),
    },
  };
}

/** The seats rows: cold figures, and snapshot ones against them. */
export function reportSeats(results: Results, c: MeasuredSeats, s: MeasuredSeats | undefined, runs = 5): void {
  const both = (v: number[]): string => `${ms(median(v))} / ${ms(p95(v))}`;
  results.add('seats', `cold: 1 seat, create → running, median / p95 of ${runs}`, '', both(c.raw['running'] ?? []), null);
  results.add('seats', `cold: 1 seat, create → ready, median / p95 of ${runs}`, '', both(c.raw['ready'] ?? []), null);
  results.add('seats', "cold: agent's own share of a create (all but the VMM's start), median", '', ms(c.agentShareMs), null);
  results.add('seats', 'cold: VMM memory per idle seat, RSS / PSS (median)', '', `${mib(c.rss)} / ${mib(c.pss)}`, null);
  results.add(
    'seats',
    'cold: 10 seats at once, create → ready, median / p95 (baseline: 1 seat)',
    ms(c.readyMs),
    both(c.raw['tenReady'] ?? []),
    c.tenReadyMs / c.readyMs,
  );
  if (!s) return;
  results.add('seats', 'snapshot: how the seats started', '', s.starts, null);
  results.add(
    'seats',
    `snapshot: 1 seat, create → running, median / p95 of ${runs} (baseline: cold)`,
    ms(c.runningMs),
    both(s.raw['running'] ?? []),
    s.runningMs / c.runningMs,
  );
  results.add(
    'seats',
    `snapshot: 1 seat, create → ready, median / p95 of ${runs} (baseline: cold)`,
    ms(c.readyMs),
    both(s.raw['ready'] ?? []),
    s.readyMs / c.readyMs,
  );
  results.add(
    'seats',
    "snapshot: agent's own share of a create (all but the VMM's restore), median (baseline: cold)",
    ms(c.agentShareMs),
    ms(s.agentShareMs),
    s.agentShareMs / c.agentShareMs,
  );
  results.add(
    'seats',
    'snapshot: VMM memory per idle seat, RSS / PSS (median; baseline: cold RSS)',
    mib(c.rss),
    `${mib(s.rss)} / ${mib(s.pss)}`,
    s.rss / c.rss,
  );
  results.add(
    'seats',
    'snapshot: 10 seats at once, create → ready, median / p95 (baseline: cold, 10 at once)',
    ms(c.tenReadyMs),
    both(s.raw['tenReady'] ?? []),
    s.tenReadyMs / c.tenReadyMs,
  );
  results.add(
    'seats',
    'snapshot: 10 idle seats at once, VMM PSS per seat, median (baseline: cold seat PSS)',
    mib(c.pss),
    mib(median(s.raw['tenPss'] ?? [])),
    median(s.raw['tenPss'] ?? []) / c.pss,
  );
}
