// Keeps each worker's state current: asks its agent for /health and /info; one that answers is
// up (with its capacity), one that failed `downAfterFailures` polls in a row is down and gets no new seats.
import type { Worker } from './model.ts';
import type { Clock, WorkerPort, WorkshopRepository } from './ports.ts';

export interface WorkerMonitorOptions {
  readonly repo: WorkshopRepository;
  readonly workers: WorkerPort;
  readonly clock: Clock;
  readonly downAfterFailures: number;
}

/** Polls one worker and records what it said (or that it did not answer). */
export async function pollWorker(o: WorkerMonitorOptions, worker: Worker): Promise<Worker> {
  try {
    const health = await o.workers.health(worker);
    return await o.repo.observeWorker(
      worker.id,
      { state: 'up', capacity: health.capacity, vmCount: health.vmCount, agentWorkerId: health.agentWorkerId },
      o.clock.now(),
      o.downAfterFailures,
    );
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return o.repo.observeWorker(worker.id, { state: 'down', error: message }, o.clock.now(), o.downAfterFailures);
  }
}

/** One round over every worker, in parallel. */
export async function pollWorkers(o: WorkerMonitorOptions): Promise<Worker[]> {
  const workers = await o.repo.listWorkers();
  return Promise.all(workers.map((w) => pollWorker(o, w)));
}
