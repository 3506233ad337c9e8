// Placement: which worker a new seat goes to. `spread` picks the least loaded worker, `pack` the
// most loaded one that still has room; a worker without a free slot or memory for the seat is never picked.
import type { PlacementPolicy, WorkerLoad } from './model.ts';

export function hasRoom(worker: WorkerLoad, memoryMb: number): boolean {
  if (worker.seats >= worker.capacity) return false;
  return worker.memoryMb === null || worker.memoryMb - worker.seatMemoryMb >= memoryMb;
}

/** The worker for one seat of `memoryMb`, or undefined when none has room. Ties go to the lower id (stable). */
export function chooseWorker(workers: readonly WorkerLoad[], policy: PlacementPolicy, memoryMb: number): WorkerLoad | undefined {
  const fits = workers.filter((w) => hasRoom(w, memoryMb));
  const load = (w: WorkerLoad): number => w.seats / w.capacity;
  const sorted = [...fits].sort((a, b) => {
    const byLoad = policy === 'spread' ? load(a) - load(b) : load(b) - load(a);
    return byLoad !== 0 ? byLoad : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  return sorted[0];
}
