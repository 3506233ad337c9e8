// /api/workshops: an instructor's workshops and their seats, for the dashboard: create, list,
// show with seats, add seats, reset a seat, read its console, get any learner's workspace link
// (audited), end. Another instructor's workshop is not found.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Workshop } from '../../workshops/model.ts';
import { ApiError } from '../errors.ts';
import { actorOfInstructor, type InstructorIdentity } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import {
  NO_CONTROL_CHARACTERS,
  TEMPLATE,
  errorReply,
  seatJson,
  seatParams,
  seatReply,
  workshopJson,
  workshopParams,
  workshopReply,
  workspacePath,
  type SeatParams,
  type WorkshopParams,
} from '../schemas.ts';

interface CreateWorkshopBody {
  name: string;
  seats: number;
  max_seats?: number;
  template?: string;
  vcpus?: number;
  memory_mb?: number;
  starts_at?: string;
  ends_at: string;
  idle_timeout_s?: number;
}

const MAX_SEATS = 500;
const DATE_TIME = { type: 'string', format: 'date-time', maxLength: 40 } as const;

const createBody = {
  type: 'object',
  required: ['name', 'seats', 'ends_at'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200, pattern: NO_CONTROL_CHARACTERS },
    seats: { type: 'integer', minimum: 0, maximum: MAX_SEATS, description: 'seats made in advance' },
    max_seats: { type: 'integer', minimum: 1, maximum: MAX_SEATS, description: 'most seats joins may grow it to (default: seats)' },
    template: TEMPLATE,
    vcpus: { type: 'integer', minimum: 1, maximum: 64 },
    memory_mb: { type: 'integer', minimum: 128, maximum: 1_048_576 },
    starts_at: DATE_TIME,
    ends_at: DATE_TIME,
    idle_timeout_s: { type: 'integer', minimum: 60, maximum: 7 * 86_400 },
  },
} as const;

const workshopWithSeats = {
  type: 'object',
  properties: { workshop: workshopReply, seats: { type: 'array', items: seatReply } },
} as const;

function time(field: string, text: string): number {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new ApiError(400, 'invalid_field', `${field} must be an ISO 8601 date-time`);
  return ms;
}

export function seatNumber(text: string): number {
  const seat = Number(text);
  if (!Number.isInteger(seat) || seat < 1 || seat > 100_000) throw new ApiError(400, 'invalid_field', 'seatID must be an integer from 1');
  return seat;
}

export async function workshopRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  const owned = async (
    request: FastifyRequest<{ Params: WorkshopParams }>,
  ): Promise<{ identity: InstructorIdentity; workshop: Workshop }> => {
    const identity = await c.auth.requireInstructor(request);
    return { identity, workshop: await c.service.workshopOf(identity.instructorId, request.params.workshopID) };
  };
  const audit = (identity: InstructorIdentity, action: string, workshop: Workshop, target: string, detail?: string): Promise<void> =>
    c.repo.audit(
      { actor: actorOfInstructor(identity), action, target, workshopId: workshop.id, ...(detail ? { detail } : {}) },
      c.clock.now(),
    );
  const seatsOf = async (workshop: Workshop) =>
    (await c.repo.listSeats(workshop.id)).map((s) => seatJson(s, workshop.idleTimeoutS, c.clock.now()));

  app.post<{ Body: CreateWorkshopBody }>(
    '/api/workshops',
    { schema: { body: createBody, response: { 201: workshopReply, 400: errorReply, 503: errorReply } } },
    async (request, reply) => {
      const identity = await c.auth.requireInstructor(request);
      const b = request.body;
      const workshop = await c.service.createWorkshop({
        instructorId: identity.instructorId,
        name: b.name,
        seats: b.seats,
        maxSeats: b.max_seats ?? Math.max(b.seats, 1),
        template: b.template ?? 'default',
        vcpus: b.vcpus ?? 1,
        memoryMb: b.memory_mb ?? 512,
        startsAt: b.starts_at === undefined ? c.clock.now() : time('starts_at', b.starts_at),
        endsAt: time('ends_at', b.ends_at),
        idleTimeoutS: b.idle_timeout_s ?? 1800,
      });
      await audit(identity, 'workshop.create', workshop, workshop.id, `${b.seats} seats`);
      return reply.code(201).send(workshopJson(workshop));
    },
  );

  app.get(
    '/api/workshops',
    { schema: { response: { 200: { type: 'object', properties: { workshops: { type: 'array', items: workshopReply } } } } } },
    async (request) => {
      const identity = await c.auth.requireInstructor(request);
      return { workshops: (await c.repo.listWorkshops(identity.instructorId)).map(workshopJson) };
    },
  );

  app.get<{ Params: WorkshopParams }>(
    '/api/workshops/:workshopID',
    { schema: { params: workshopParams, response: { 200: workshopWithSeats, 404: errorReply } } },
    async (request) => {
      const { workshop } = await owned(request);
      return { workshop: workshopJson(workshop), seats: await seatsOf(workshop) };
    },
  );

  app.get<{ Params: WorkshopParams }>(
    '/api/workshops/:workshopID/seats',
    {
      schema: { params: workshopParams, response: { 200: { type: 'object', properties: { seats: { type: 'array', items: seatReply } } } } },
    },
    async (request) => ({ seats: await seatsOf((await owned(request)).workshop) }),
  );

  app.post<{ Params: WorkshopParams; Body: { count: number } }>(
    '/api/workshops/:workshopID/seats',
    {
      schema: {
        params: workshopParams,
        body: {
          type: 'object',
          required: ['count'],
          additionalProperties: false,
          properties: { count: { type: 'integer', minimum: 1, maximum: 100 } },
        },
        response: { 201: { type: 'object', properties: { seats: { type: 'array', items: seatReply } } } },
      },
    },
    async (request, reply) => {
      const { identity, workshop } = await owned(request);
      const seats = await c.service.addSeats(workshop, request.body.count);
      await audit(identity, 'workshop.add_seats', workshop, workshop.id, `${request.body.count} seats`);
      return reply.code(201).send({ seats: seats.map((s) => seatJson(s, workshop.idleTimeoutS, c.clock.now())) });
    },
  );

  app.post<{ Params: SeatParams }>(
    '/api/workshops/:workshopID/seats/:seatID/reset',
    { schema: { params: seatParams, response: { 202: seatReply, 404: errorReply, 502: errorReply, 503: errorReply } } },
    async (request, reply) => {
      const { identity, workshop } = await owned(request);
      const seatId = seatNumber(request.params.seatID);
      const seat = await c.service.resetSeat(workshop, seatId);
      await audit(identity, 'seat.reset', workshop, `${workshop.id}/${seatId}`);
      return reply.code(202).send(seatJson(seat, workshop.idleTimeoutS, c.clock.now()));
    },
  );

  app.get<{ Params: SeatParams; Querystring: { bytes?: string } }>(
    '/api/workshops/:workshopID/seats/:seatID/console',
    {
      schema: {
        params: seatParams,
        querystring: { type: 'object', additionalProperties: false, properties: { bytes: { type: 'string', pattern: '^[0-9]{1,7}$' } } },
        response: { 404: errorReply, 502: errorReply, 503: errorReply },
      },
    },
    async (request, reply) => {
      const { workshop } = await owned(request);
      const bytes = Math.min(Number(request.query.bytes ?? 65_536), 1_048_576);
      const text = await c.service.consoleLog(workshop, seatNumber(request.params.seatID), bytes);
      return reply.type('text/plain; charset=utf-8').send(text);
    },
  );

  app.post<{ Params: SeatParams }>(
    '/api/workshops/:workshopID/seats/:seatID/workspace-url',
    {
      schema: {
        description: "A learner's workspace as the instructor opens it (with their session); each one given out is in the audit table",
        params: seatParams,
        response: { 200: { type: 'object', properties: { workspace_url: { type: 'string' }, learner: { type: ['string', 'null'] } } } },
      },
    },
    async (request) => {
      const { identity, workshop } = await owned(request);
      const seatId = seatNumber(request.params.seatID);
      const seat = await c.repo.getSeat(workshop.id, seatId);
      if (!seat || seat.state === 'removed') throw new ApiError(404, 'seat_not_found', `no seat ${seatId} in workshop ${workshop.id}`);
      await audit(identity, 'seat.workspace_url', workshop, `${workshop.id}/${seatId}`, seat.learnerName ?? undefined);
      return { workspace_url: workspacePath(workshop.id, seatId), learner: seat.learnerName };
    },
  );

  app.post<{ Params: WorkshopParams }>(
    '/api/workshops/:workshopID/end',
    {
      schema: {
        params: workshopParams,
        response: {
          200: { type: 'object', properties: { workshop: workshopReply, removed: { type: 'integer' }, failed: { type: 'integer' } } },
        },
      },
    },
    async (request) => {
      const { identity, workshop } = await owned(request);
      const result = await c.service.end(workshop.id);
      await audit(identity, 'workshop.end', workshop, workshop.id, `${result.removed} VMs removed, ${result.failed} failed`);
      const ended = await c.service.workshopOf(identity.instructorId, workshop.id);
      return { workshop: workshopJson(ended), ...result };
    },
  );

  app.get<{ Params: WorkshopParams }>('/api/workshops/:workshopID/audit', { schema: { params: workshopParams } }, async (request) => {
    const { workshop } = await owned(request);
    return {
      entries: (await c.repo.listAudit(workshop.id)).map((e) => ({
        at: new Date(e.at).toISOString(),
        actor: e.actor,
        action: e.action,
        target: e.target,
        detail: e.detail ?? null,
      })),
    };
  });
}
