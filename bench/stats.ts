// Small statistics and the one results table every benchmark section adds rows to.
import { readFileSync } from 'node:fs';

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

export const median = (values: readonly number[]): number => percentile(values, 50);
export const p95 = (values: readonly number[]): number => percentile(values, 95);

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** One line of the table: a measure, its baseline (same run), ours, and ours/baseline. */
export interface Row {
  readonly section: string;
  readonly measure: string;
  readonly baseline: string;
  readonly ours: string;
  readonly ratio: number | null;
}

export class Results {
  readonly rows: Row[] = [];

  add(section: string, measure: string, baseline: string, ours: string, ratio: number | null): void {
    const row = { section, measure, baseline, ours, ratio };
    this.rows.push(row);
    process.stdout.write(
      `  ${measure}: ${baseline ? `${baseline} -> ` : ''}${ours}${ratio === null ? '' : `  (ratio ${ratio.toFixed(3)})`}\n`,
    );
  }

  table(): string {
    const lines = ['| section | measure | baseline (same run) | ours | ours / baseline |', '| --- | --- | --- | --- | --- |'];
    for (const r of this.rows)
      lines.push(`| ${r.section} | ${r.measure} | ${r.baseline || '—'} | ${r.ours} | ${r.ratio === null ? '—' : r.ratio.toFixed(3)} |`);
    return lines.join('\n');
  }
}

export const ms = (value: number): string => `${value < 10 ? value.toFixed(1) : value.toFixed(0)} ms`;
export const mib = (bytes: number): string => `${(bytes / 1048576).toFixed(1)} MiB`;
export const mibps = (bytes: number, msTaken: number): string => `${(bytes / 1048576 / (msTaken / 1000)).toFixed(1)} MiB/s`;

/** Resident and proportional (shared pages split) memory of a process, in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; pss: number }> {
  const { readFile } = await import('node:fs/promises');
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(rollup)?.[1] ?? NaN) * 1024;
  return { rss: kb('Rss'), pss: kb('Pss') };
}

/** CPU time (user + system) a process has used so far, in ms (from /proc: 10 ms steps). */
export function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) in parentheses: utime and stime are 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerSecond = 100; // USER_HZ: 100 on every Linux the agent runs on
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / ticksPerSecond;
}
