// The WorkerPort over each worker's agent API (src/agent-client): health from /health, VMs made
// with `wait: ready` (a seat is ready when its learner can use it), deletes that tolerate a VM already gone.
import { AgentClient, AgentError } from '../agent-client/client.ts';
import type { Worker } from '../workshops/model.ts';
import type { SeatVmRequest, WorkerHealth, WorkerPort, WorkerVm } from '../workshops/ports.ts';

export interface AgentWorkersOptions {
  /** How long a create may wait for the guest's services (s). */
  readonly readyTimeoutS: number;
}

export class AgentWorkers implements WorkerPort {
  private readonly clients = new Map<string, AgentClient>();

  constructor(private readonly o: AgentWorkersOptions) {}

  /** One client per worker URL and token (a changed token makes a new one). */
  client(worker: Worker): AgentClient {
    const key = `${worker.url}\n${worker.token ?? ''}`;
    let client = this.clients.get(key);
    if (!client) {
      client = new AgentClient(worker.url, worker.token ?? undefined);
      this.clients.set(key, client);
    }
    return client;
  }

  async health(worker: Worker): Promise<WorkerHealth> {
    const client = this.client(worker);
    const health = await client.health();
    // /info needs the token: a wrong token makes the worker unusable, so it counts as down.
    const info = await client.info();
    const capacity = typeof info['capacity'] === 'number' ? info['capacity'] : health.capacity;
    return { agentWorkerId: health.worker_id, capacity, vmCount: health.vm_count };
  }

  async listVms(worker: Worker): Promise<WorkerVm[]> {
    return (await this.client(worker).listVms()).map((vm) => ({
      workshopId: vm.workshop_id,
      seatId: vm.seat_id,
      status: vm.status,
      lastError: vm.last_error,
    }));
  }

  async createVm(worker: Worker, r: SeatVmRequest): Promise<void> {
    await this.client(worker).createVm({
      workshop_id: r.workshopId,
      seat_id: r.seatId,
      vcpus: r.vcpus,
      memory_mb: r.memoryMb,
      template: r.template,
      wait: 'ready',
      wait_timeout_s: this.o.readyTimeoutS,
    });
  }

  async deleteVm(worker: Worker, workshopId: string, seatId: number): Promise<void> {
    await unlessMissing(this.client(worker).deleteVm(workshopId, seatId));
  }

  consoleLog(worker: Worker, workshopId: string, seatId: number, bytes: number): Promise<string> {
    return this.client(worker).logs(workshopId, seatId, bytes);
  }

  async stopVm(worker: Worker, workshopId: string, seatId: number): Promise<void> {
    await unlessMissing(this.client(worker).stopVm(workshopId, seatId));
  }

  async startVm(worker: Worker, workshopId: string, seatId: number): Promise<'started' | 'missing'> {
    const started = this.client(worker).startVm(workshopId, seatId, { wait: 'ready', wait_timeout_s: this.o.readyTimeoutS });
    return (await unlessMissing(started)) ? 'started' : 'missing';
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
