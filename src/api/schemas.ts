// JSON schemas of the API's inputs and the VM's JSON shape.
import { TEMPLATE_NAME_PATTERN, type VmRecord } from '../vms/model.ts';
import { WORKSHOP_ID_PATTERN } from '../http/seat.ts';

export { WORKSHOP_ID_PATTERN, vmParamsSchema } from '../http/seat.ts';

export function createVmBodySchema(maxSeat: number, maxVcpus: number, maxMemoryMb: number) {
  return {
    type: 'object',
    required: ['workshop_id', 'seat_id'],
    additionalProperties: false,
    properties: {
      workshop_id: { type: 'string', pattern: WORKSHOP_ID_PATTERN },
      seat_id: { type: 'integer', minimum: 1, maximum: maxSeat },
      vcpus: { type: 'integer', minimum: 1, maximum: maxVcpus },
      memory_mb: { type: 'integer', minimum: 128, maximum: maxMemoryMb },
      wait: { type: 'string', enum: ['running', 'ready'] },
      wait_timeout_s: { type: 'integer', minimum: 1, maximum: 600 },
      template: { type: 'string', pattern: TEMPLATE_NAME_PATTERN },
    },
  } as const;
}

/** POST /vms/{ws}/{seat}/start: like a create, it may wait for the guest's services. */
export const startVmBodySchema = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: {
    wait: { type: 'string', enum: ['running', 'ready'] },
    wait_timeout_s: { type: 'integer', minimum: 1, maximum: 600 },
  },
} as const;

export interface StartVmBody {
  wait?: 'running' | 'ready';
  wait_timeout_s?: number;
}

export interface CreateVmBody {
  workshop_id: string;
  seat_id: number;
  vcpus?: number;
  memory_mb?: number;
  wait?: 'running' | 'ready';
  wait_timeout_s?: number;
  template?: string;
}

export const listQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { workshop_id: { type: 'string', pattern: WORKSHOP_ID_PATTERN } },
} as const;

export const logsQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { bytes: { type: 'string', pattern: '^[0-9]{1,7}$' } },
} as const;

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

/** The VM as the API shows it. */
export function vmJson(vm: VmRecord) {
  return {
    workshop_id: vm.workshopId,
    seat_id: vm.seatId,
    ip: vm.ip,
    status: vm.status,
    ready: vm.readyAt !== null,
    mac: vm.mac,
    tap: vm.tapName,
    vcpus: vm.vcpus,
    memory_mb: vm.memoryMb,
    hypervisor: vm.hypervisor,
    template: vm.template,
    build_id: vm.buildId,
    pid: vm.pid,
    created_at: iso(vm.createdAt),
    restarts: vm.restarts,
    last_error: vm.lastError,
    /** `snapshot`: restored from its template's snapshot; `cold`: booted from its kernel (start_reason says why). */
    start: vm.start.mode,
    start_reason: vm.start.reason,
    timeline: {
      created_at: iso(vm.createdAt),
      running_at: iso(vm.runningAt),
      ready_at: iso(vm.readyAt),
      running_ms: vm.runningAt === null ? null : vm.runningAt - vm.createdAt,
      ready_ms: vm.readyAt === null ? null : vm.readyAt - vm.createdAt,
      /** Milliseconds of each step of the create's boot plan (bridge, tap, layer, vmm...). */
      steps_ms: vm.start.stepsMs,
    },
  };
}
