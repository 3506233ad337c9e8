// Create → running and create → ready, cold, one seat at a time and ten at once, with the
// agent's own share of a create (all but the VMM's start) and the VMM's memory per idle seat.
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchAgent } from './agent.ts';
import { median, memoryOf, mib, ms, p95, type Results } from './stats.ts';

export interface SeatFigures {
  /** Median create → running of one cold seat (the baseline of the scale section). */
  readonly runningMs: number;
}

export async function seatsBench(agent: BenchAgent, results: Results, runs = 5): Promise<SeatFigures> {
  process.stdout.write('\n## seats: create → running / ready (cold)\n');
  const running: number[] = [];
  const ready: number[] = [];
  const agentShare: number[] = [];
  const rss: number[] = [];
  const pss: number[] = [];
  for (let i = 1; i <= runs; i++) {
    const { vm, clientMs } = await agent.create('bench-cold', i);
    const steps = await agent.stepsMs('bench-cold', i);
    agentShare.push(clientMs - (steps['vmm'] ?? 0));
    const done = await agent.waitReady('bench-cold', i);
    running.push(done.timeline.running_ms ?? NaN);
    ready.push(done.timeline.ready_ms ?? NaN);
    await sleep(2_000); // idle: what a seat costs while its learner reads the instructions
    const memory = await memoryOf(vm.pid);
    rss.push(memory.rss);
    pss.push(memory.pss);
    await agent.delete('bench-cold', i);
  }
  results.add('seats', `1 seat, create → running, median / p95 of ${runs}`, '', `${ms(median(running))} / ${ms(p95(running))}`, null);
  results.add('seats', `1 seat, create → ready, median / p95 of ${runs}`, '', `${ms(median(ready))} / ${ms(p95(ready))}`, null);
  results.add('seats', "agent's own share of a create (all but the VMM's start), median", '', ms(median(agentShare)), null);
  results.add('seats', 'VMM memory per idle cold seat, RSS / PSS (median)', '', `${mib(median(rss))} / ${mib(median(pss))}`, null);

  const ten = Array.from({ length: 10 }, (_, i) => i + 1);
  await Promise.all(ten.map((seat) => agent.create('bench-ten', seat)));
  const tenReady = await Promise.all(ten.map((seat) => agent.waitReady('bench-ten', seat)));
  const tenRunning = tenReady.map((vm) => vm.timeline.running_ms ?? NaN);
  const tenReadyMs = tenReady.map((vm) => vm.timeline.ready_ms ?? NaN);
  await Promise.all(ten.map((seat) => agent.delete('bench-ten', seat)));
  results.add(
    'seats',
    '10 seats at once, create → running, median / p95 (baseline: 1 seat)',
    ms(median(running)),
    `${ms(median(tenRunning))} / ${ms(p95(tenRunning))}`,
    median(tenRunning) / median(running),
  );
  results.add(
    'seats',
    '10 seats at once, create → ready, median / p95 (baseline: 1 seat)',
    ms(median(ready)),
    `${ms(median(tenReadyMs))} / ${ms(p95(tenReadyMs))}`,
    median(tenReadyMs) / median(ready),
  );
  return { runningMs: median(running) };
}
