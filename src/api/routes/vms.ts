// /vms: create, list, inspect, stop, start, delete VMs, and read a guest's console.
import type { FastifyInstance, FastifyReply } from 'fastify';
import {
  createVmBodySchema,
  listQuerySchema,
  logsQuerySchema,
  startVmBodySchema,
  vmJson,
  type CreateVmBody,
  type StartVmBody,
} from '../schemas.ts';
import { seatFromParam, vmParamsSchema, type VmParams } from '../../http/seat.ts';
import type { VmManager } from '../../vms/manager.ts';
import type { ReadinessTracker } from '../../vms/readiness.ts';
import type { VmRecord } from '../../vms/model.ts';
import { DEFAULT_TEMPLATE } from '../../vms/model.ts';

export interface VmRoutesOptions {
  readonly manager: VmManager;
  readonly readiness: ReadinessTracker;
  readonly maxSeat: number;
  readonly defaults: { readonly vcpus: number; readonly memoryMb: number };
  readonly limits: { readonly vcpus: number; readonly memoryMb: number };
}

const LOGS_DEFAULT_BYTES = 64 * 1024;
const LOGS_MAX_BYTES = 1024 * 1024;
const BODY_LIMIT = 16 * 1024;

export async function vmRoutes(app: FastifyInstance, o: VmRoutesOptions): Promise<void> {
  const params = vmParamsSchema();

  app.get<{ Querystring: { workshop_id?: string } }>('/vms', { schema: { querystring: listQuerySchema } }, async (request) => {
    return { vms: o.manager.list(request.query.workshop_id).map(vmJson) };
  });

  app.post<{ Body: CreateVmBody }>(
    '/vms',
    { bodyLimit: BODY_LIMIT, schema: { body: createVmBodySchema(o.maxSeat, o.limits.vcpus, o.limits.memoryMb) } },
    async (request, reply) => {
      const body = request.body;
      const vm = await o.manager.create(
        {
          workshopId: body.workshop_id,
          seatId: body.seat_id,
          vcpus: body.vcpus ?? o.defaults.vcpus,
          memoryMb: body.memory_mb ?? o.defaults.memoryMb,
          template: body.template ?? DEFAULT_TEMPLATE,
        },
        request.log,
      );
      void o.readiness.follow(vm.workshopId, vm.seatId);
      return answer(reply, 201, vm, body);
    },
  );

  /** The VM as it is now, or once its services answer when asked to wait (504 with its console if they do not). */
  async function answer(reply: FastifyReply, status: number, vm: VmRecord, body: StartVmBody): Promise<FastifyReply> {
    if (body.wait !== 'ready') return reply.code(status).send(vmJson(vm));
    try {
      const ready = await o.readiness.waitReady(vm.workshopId, vm.seatId, (body.wait_timeout_s ?? 120) * 1000);
      return reply.code(status).send(vmJson(ready));
    } catch (error) {
      const console = await o.manager.consoleTail(vm.workshopId, vm.seatId, 4096);
      return reply.code(504).send({
        error: (error as Error).message,
        code: 'not_ready',
        vm: vmJson(o.manager.get(vm.workshopId, vm.seatId)),
        console: console.split('\n').slice(-30).join('\n'),
      });
    }
  }

  app.post<{ Params: VmParams }>(
    '/vms/:workshopID/:seatID/stop',
    {
      schema: {
        params,
        description: "Stops the VM's VMM and keeps its disk, address and TAP (an idle seat); stopping a stopped VM does nothing",
      },
    },
    async (request) => {
      const seat = seatFromParam(request.params.seatID, o.maxSeat);
      return vmJson(await o.manager.stop(request.params.workshopID, seat, request.log));
    },
  );

  app.post<{ Params: VmParams; Body: StartVmBody | null }>(
    '/vms/:workshopID/:seatID/start',
    {
      bodyLimit: BODY_LIMIT,
      schema: {
        params,
        body: startVmBodySchema,
        description: 'Boots a stopped VM again from its own disk (its files as they were); starting a running VM does nothing',
      },
    },
    async (request, reply) => {
      const seat = seatFromParam(request.params.seatID, o.maxSeat);
      const vm = await o.manager.start(request.params.workshopID, seat, request.log);
      void o.readiness.follow(vm.workshopId, vm.seatId);
      return answer(reply, 200, vm, request.body ?? {});
    },
  );

  app.get<{ Params: VmParams }>('/vms/:workshopID/:seatID', { schema: { params } }, async (request) => {
    const seat = seatFromParam(request.params.seatID, o.maxSeat);
    return vmJson(o.manager.get(request.params.workshopID, seat));
  });

  app.delete<{ Params: VmParams }>('/vms/:workshopID/:seatID', { schema: { params } }, async (request, reply) => {
    const seat = seatFromParam(request.params.seatID, o.maxSeat);
    await o.manager.delete(request.params.workshopID, seat, request.log);
    return reply.code(204).send();
  });

  app.get<{ Params: VmParams; Querystring: { bytes?: string } }>(
    '/vms/:workshopID/:seatID/logs',
    { schema: { params, querystring: logsQuerySchema } },
    async (request, reply) => {
      const seat = seatFromParam(request.params.seatID, o.maxSeat);
      const bytes = Math.min(Number(request.query.bytes ?? LOGS_DEFAULT_BYTES), LOGS_MAX_BYTES);
      const text = await o.manager.consoleTail(request.params.workshopID, seat, bytes);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );
}
