// The WorkerPort over each worker's agent API (src/agent-client): health from /health, VMs made
// with `wait: ready` (a seat is ready when its learner can use it), deletes that tolerate a VM already gone.
// The agent's failures become the domain's: worker_unreachable, vm_not_found, worker_error.
import { AgentClient, AgentError, AgentUnreachable, DEFAULT_AGENT_TIMEOUTS, type AgentTimeouts } from '../agent-client/client.ts';
import { WorkshopError, type Worker } from '../workshops/model.ts';
import type { SeatVmRequest, WorkerHealth, WorkerPort, WorkerVm } from '../workshops/ports.ts';

export interface AgentWorkersOptions {
  /** How long a create may wait for the guest's services (s). */
  readonly readyTimeoutS: number;
  /** How long each call may wait for the agent's answer (default: DEFAULT_AGENT_TIMEOUTS). */
  readonly timeouts?: AgentTimeouts;
}

export class AgentWorkers implements WorkerPort {
  private readonly clients = new Map<string, AgentClient>();

  constructor(private readonly o: AgentWorkersOptions) {}

  /** One client per worker URL and token (a changed token makes a new one). */
  client(worker: Worker): AgentClient {
    const key = `${worker.url}\n${worker.token ?? ''}`;
    let client = this.clients.get(key);
    if (!client) {
      client = new AgentClient(worker.url, worker.token ?? undefined, this.o.timeouts ?? DEFAULT_AGENT_TIMEOUTS);
      this.clients.set(key, client);
    }
    return client;
  }

  health(worker: Worker): Promise<WorkerHealth> {
    return this.call(worker, async (client) => {
      const health = await client.health();
      // /info needs the token: a wrong token makes the worker unusable, so it counts as down.
      const info = await client.info();
      const capacity = typeof info['capacity'] === 'number' ? info['capacity'] : health.capacity;
      return { agentWorkerId: health.worker_id, capacity, vmCount: health.vm_count };
    });
  }

  listVms(worker: Worker): Promise<WorkerVm[]> {
    return this.call(worker, async (client) =>
      (await client.listVms()).map((vm) => ({
        workshopId: vm.workshop_id,
        seatId: vm.seat_id,
        status: vm.status,
        lastError: vm.last_error,
      })),
    );
  }

  async createVm(worker: Worker, r: SeatVmRequest): Promise<void> {
    await this.call(worker, (client) =>
      client.createVm({
        workshop_id: r.workshopId,
        seat_id: r.seatId,
        vcpus: r.vcpus,
        memory_mb: r.memoryMb,
        template: r.template,
        wait: 'ready',
        wait_timeout_s: this.o.readyTimeoutS,
      }),
    );
  }

  async deleteVm(worker: Worker, workshopId: string, seatId: number): Promise<void> {
    await this.call(worker, (client) => unlessMissing(client.deleteVm(workshopId, seatId)));
  }

  consoleLog(worker: Worker, workshopId: string, seatId: number, bytes: number): Promise<string> {
    return this.call(worker, (client) => client.logs(workshopId, seatId, bytes));
  }

  async stopVm(worker: Worker, workshopId: string, seatId: number): Promise<void> {
    await this.call(worker, (client) => unlessMissing(client.stopVm(workshopId, seatId)));
  }

  async startVm(worker: Worker, workshopId: string, seatId: number): Promise<'started' | 'missing'> {
    const started = await this.call(worker, (client) =>
      unlessMissing(client.startVm(workshopId, seatId, { wait: 'ready', wait_timeout_s: this.o.readyTimeoutS })),
    );
    return started ? 'started' : 'missing';
  }

  /** A call to the worker's agent, its failures as the domain's refusals (the API answers them as 503, 404, 502). */
  private async call<T>(worker: Worker, work: (client: AgentClient) => Promise<T>): Promise<T> {
    try {
      return await work(this.client(worker));
    } catch (error) {
      if (error instanceof AgentUnreachable)
        throw new WorkshopError('worker_unreachable', `worker ${worker.id} is unreachable: ${error.message}`);
      if (error instanceof AgentError && error.status === 404) throw new WorkshopError('vm_not_found', error.message);
      // The agent's own words: they name what failed (a seat's failure reason keeps them too).
      if (error instanceof AgentError) throw new WorkshopError('worker_error', error.message);
      throw error;
    }
  }
}

/** False when the agent has no such VM (404); any other refusal is thrown. */
async function unlessMissing(request: Promise<unknown>): Promise<boolean> {
  try {
    await request;
    return true;
  } catch (error) {
    if (error instanceof AgentError && error.status === 404) return false;
    throw error;
  }
}
