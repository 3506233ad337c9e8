// Helpers of test/integration/concurrency.test.ts: a bounded pool that fires requests, a scan of
// the processes that belong to an agent's VM directory, and a linearizability check of the
// creates and deletes one seat received (is there an order of them, consistent with real time,
// in which every answer is what a single-threaded agent would have given?).
import { readdirSync, readFileSync } from 'node:fs';

/** Runs `work` over `items` with at most `limit` running at once; results in item order. */
export async function inPool<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index] as T, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export interface ProcessInfo {
  readonly pid: number;
  readonly args: readonly string[];
}

/** Live processes (zombies excluded) whose command line mentions `fragment`. */
export function processesMentioning(fragment: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (!args.some((a) => a.includes(fragment))) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      if (state === 'Z' || state === 'X') continue;
      found.push({ pid, args });
    } catch {
      // gone meanwhile
    }
  }
  return found.sort((a, b) => a.pid - b.pid);
}

export type SeatOp = 'create' | 'delete';

/** One request as it happened: when it was sent, when its answer came, what the answer was. */
export interface Observed {
  readonly op: SeatOp;
  readonly start: number;
  readonly end: number;
  readonly status: number;
  readonly code: string | undefined;
}

/** What a single-threaded agent answers `op` on a seat that `exists` (or not), and the seat afterwards. */
function sequential(op: Observed, exists: boolean): boolean | undefined {
  if (op.op === 'create') {
    if (op.status === 201) return exists ? undefined : true;
    if (op.status === 409 && op.code === 'vm_exists') return exists ? true : undefined;
    // Refused for the worker's capacity or memory: nothing changes, whatever the seat's state.
    if (op.status === 503 && (op.code === 'at_capacity' || op.code === 'insufficient_memory')) return exists;
    return undefined;
  }
  if (op.status === 204) return exists ? false : undefined;
  if (op.status === 404 && op.code === 'vm_not_found') return exists ? undefined : false;
  return undefined;
}

/**
 * Whether the seat's history is linearizable (Wing & Gong): some order of the operations that
 * respects real time (an operation answered before another was sent comes first) explains every
 * answer and ends in `finalExists`. Returns one such order (indexes), or undefined.
 */
export function linearize(ops: readonly Observed[], finalExists: boolean, initiallyExists = false): number[] | undefined {
  const done = new Array<boolean>(ops.length).fill(false);
  const order: number[] = [];
  const seen = new Set<string>();
  const search = (exists: boolean): boolean => {
    if (order.length === ops.length) return exists === finalExists;
    const key = `${exists}:${done.map((d) => (d ? 1 : 0)).join('')}`;
    if (seen.has(key)) return false;
    seen.add(key);
    // Candidates: pending operations sent before every pending operation was answered.
    let firstEnd = Infinity;
    ops.forEach((op, i) => {
      if (!done[i]) firstEnd = Math.min(firstEnd, op.end);
    });
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i];
      if (done[i] || !op || op.start > firstEnd) continue;
      const after = sequential(op, exists);
      if (after === undefined) continue;
      done[i] = true;
      order.push(i);
      if (search(after)) return true;
      order.pop();
      done[i] = false;
    }
    return false;
  };
  return search(initiallyExists) ? order : undefined;
}
