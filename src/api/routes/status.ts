// /health (never authenticated) and /info.
import type { FastifyInstance } from 'fastify';
import type { HypervisorInfo, ReclaimCounts } from '../../vms/ports.ts';
import type { VmManager } from '../../vms/manager.ts';

export interface StatusRoutesOptions {
  readonly manager: VmManager;
  readonly workerId: string;
  readonly capacity: number;
  readonly version: string;
  readonly hypervisor: HypervisorInfo;
  readonly bridge: { readonly name: string; readonly address: string; readonly cidr: string };
  readonly startedAt: number;
  /** What the start-up sweep removed, by kind. */
  readonly reclaimed: ReclaimCounts;
}

/** The guide's /health shape, exactly (also what the OpenAPI document shows). */
const healthSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['status', 'worker_id', 'vm_count', 'capacity', 'uptime_seconds'],
  properties: {
    status: { type: 'string', enum: ['healthy'] },
    worker_id: { type: 'string' },
    vm_count: { type: 'integer' },
    capacity: { type: 'integer' },
    uptime_seconds: { type: 'integer' },
  },
} as const;

export async function statusRoutes(app: FastifyInstance, o: StatusRoutesOptions): Promise<void> {
  const uptime = (): number => Math.floor((Date.now() - o.startedAt) / 1000);

  app.get('/health', { schema: { description: 'Never authenticated', security: [], response: { 200: healthSchema } } }, async () => ({
    status: 'healthy',
    worker_id: o.workerId,
    vm_count: o.manager.count(),
    capacity: o.capacity,
    uptime_seconds: uptime(),
  }));

  app.get('/info', async () => {
    const vms = o.manager.list();
    return {
      worker_id: o.workerId,
      version: o.version,
      hypervisor: o.hypervisor.name,
      acceleration: o.hypervisor.acceleration,
      kvm: o.hypervisor.acceleration === 'kvm',
      capacity: o.capacity,
      vm_count: vms.length,
      available_slots: Math.max(0, o.capacity - vms.length),
      vms: vms.map((vm) => ({ workshop_id: vm.workshopId, seat_id: vm.seatId, ip: vm.ip, status: vm.status })),
      bridge: o.bridge.name,
      bridge_ip: o.bridge.address,
      bridge_cidr: o.bridge.cidr,
      uptime_seconds: uptime(),
      reclaimed_at_start: o.reclaimed,
    };
  });
}
