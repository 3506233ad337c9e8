// JSON schemas of the server API's inputs and the JSON shapes of its answers (workshop, seat,
// worker, learner's seat): the same schemas validate requests, shape replies and feed /openapi.json.
import { JOIN_CODE_ALPHABET } from '../workshops/codes.ts';
import { seatStatus, type Seat, type Worker, type Workshop } from '../workshops/model.ts';

export const WORKSHOP_ID = { type: 'string', pattern: '^ws-[a-z0-9]{10}$' } as const;
export const SEAT_ID = { type: 'string', pattern: '^[0-9]{1,6}$' } as const;
export const WORKER_ID = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } as const;
export const TEMPLATE = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } as const;
/** Free text the server keeps: no control characters (PostgreSQL's text refuses NUL, and no name needs the others). */
export const NO_CONTROL_CHARACTERS = '^[^\\p{Cc}]*$';

export const workshopParams = { type: 'object', required: ['workshopID'], properties: { workshopID: WORKSHOP_ID } } as const;
export const seatParams = {
  type: 'object',
  required: ['workshopID', 'seatID'],
  properties: { workshopID: WORKSHOP_ID, seatID: SEAT_ID },
} as const;

export interface WorkshopParams {
  workshopID: string;
}
export interface SeatParams extends WorkshopParams {
  seatID: string;
}

const iso = { type: 'string', format: 'date-time' } as const;
const isoOrNull = { type: ['string', 'null'], format: 'date-time' } as const;

export const errorReply = {
  type: 'object',
  required: ['error', 'code'],
  properties: { error: { type: 'string' }, code: { type: 'string' } },
} as const;

export const workshopReply = {
  type: 'object',
  required: ['id', 'name', 'seats', 'max_seats', 'template', 'join_code', 'state', 'starts_at', 'ends_at', 'idle_timeout_s'],
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    seats: { type: 'integer' },
    max_seats: { type: 'integer' },
    template: { type: 'string' },
    vcpus: { type: 'integer' },
    memory_mb: { type: 'integer' },
    starts_at: iso,
    ends_at: iso,
    idle_timeout_s: { type: 'integer' },
    join_code: { type: 'string', description: `8 characters of ${JOIN_CODE_ALPHABET}` },
    state: { type: 'string', enum: ['active', 'ended'] },
    created_at: iso,
    ended_at: isoOrNull,
  },
} as const;

export const seatReply = {
  type: 'object',
  required: ['seat_id', 'state'],
  properties: {
    seat_id: { type: 'integer' },
    state: { type: 'string', enum: ['provisioning', 'ready', 'connected', 'idle', 'stopped', 'failed', 'removed'] },
    worker_id: { type: ['string', 'null'] },
    learner: {
      type: ['object', 'null'],
      properties: { id: { type: 'string' }, name: { type: 'string' } },
    },
    last_activity_at: isoOrNull,
    connections: { type: 'integer' },
    error: { type: ['string', 'null'] },
    workspace_path: { type: 'string', description: "the seat's page on this server (learner cookie or the instructor's session opens it)" },
  },
} as const;

export const workerReply = {
  type: 'object',
  required: ['id', 'url', 'state'],
  properties: {
    id: { type: 'string' },
    url: { type: 'string' },
    state: { type: 'string', enum: ['unknown', 'up', 'down'] },
    capacity: { type: ['integer', 'null'] },
    memory_mb: { type: ['integer', 'null'] },
    agent_worker_id: { type: ['string', 'null'] },
    vm_count: { type: ['integer', 'null'] },
    last_seen_at: isoOrNull,
    last_error: { type: ['string', 'null'] },
    has_token: { type: 'boolean' },
  },
} as const;

function isoOf(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

export function workshopJson(w: Workshop) {
  return {
    id: w.id,
    name: w.name,
    seats: w.seats,
    max_seats: w.maxSeats,
    template: w.template,
    vcpus: w.vcpus,
    memory_mb: w.memoryMb,
    starts_at: new Date(w.startsAt).toISOString(),
    ends_at: new Date(w.endsAt).toISOString(),
    idle_timeout_s: w.idleTimeoutS,
    join_code: w.joinCode,
    state: w.state,
    created_at: new Date(w.createdAt).toISOString(),
    ended_at: isoOf(w.endedAt),
  };
}

/** The learner's page of a seat on this server; its calls go to /proxy/{ws}/{seat}/ beside it. */
export function workspacePath(workshopId: string, seatId: number): string {
  return `/w/${workshopId}/${seatId}/`;
}

export function seatJson(seat: Seat, idleTimeoutS: number, now: number) {
  return {
    seat_id: seat.seatId,
    state: seatStatus(seat, idleTimeoutS, now),
    worker_id: seat.workerId,
    learner: seat.learnerId === null ? null : { id: seat.learnerId, name: seat.learnerName ?? '' },
    last_activity_at: isoOf(seat.lastActivityAt),
    connections: seat.connections,
    error: seat.error,
    workspace_path: workspacePath(seat.workshopId, seat.seatId),
  };
}

/** The worker without its token: that never leaves the server. */
export function workerJson(w: Worker) {
  return {
    id: w.id,
    url: w.url,
    state: w.state,
    capacity: w.capacity,
    memory_mb: w.memoryMb,
    agent_worker_id: w.agentWorkerId,
    vm_count: w.vmCount,
    last_seen_at: isoOf(w.lastSeenAt),
    last_error: w.lastError,
    has_token: w.token !== null,
  };
}
