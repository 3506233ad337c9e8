// Fifty small seats created at once and all deleted again, and what the agent itself holds in
// memory while it tracks them.
import type { BenchAgent } from './agent.ts';
import { median, memoryOf, mib, ms, p95, timed, type Results } from './stats.ts';

export async function scaleBench(agent: BenchAgent, results: Results, oneSeatRunningMs: number, count = 50): Promise<void> {
  process.stdout.write(`\n## ${count} seats created at once, then deleted\n`);
  const idle = await memoryOf(agent.pid);
  const seats = Array.from({ length: count }, (_, i) => i + 1);
  const createMs: number[] = [];
  const wall = await timed(() =>
    Promise.all(seats.map(async (seat) => createMs.push((await agent.create('bench-scale', seat, { memory_mb: 128 })).clientMs))),
  );
  const tracking = await memoryOf(agent.pid);
  const deleteMs: number[] = [];
  const deleteWall = await timed(() => Promise.all(seats.map(async (seat) => deleteMs.push(await agent.delete('bench-scale', seat)))));
  results.add(
    'scale',
    `${count} creates at once, each create → running, median / p95 (baseline: 1 seat alone)`,
    ms(oneSeatRunningMs),
    `${ms(median(createMs))} / ${ms(p95(createMs))}, all in ${ms(wall)}`,
    median(createMs) / oneSeatRunningMs,
  );
  results.add(
    'scale',
    `${count} deletes at once, each, median / p95`,
    '',
    `${ms(median(deleteMs))} / ${ms(p95(deleteMs))}, all in ${ms(deleteWall)}`,
    null,
  );
  results.add('scale', `agent RSS tracking ${count} VMs (baseline: none)`, mib(idle.rss), mib(tracking.rss), tracking.rss / idle.rss);
}
