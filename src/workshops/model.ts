// The workshop server's domain types: workers, workshops, seats, learners, instructors, and the
// one error type its refusals are made of.
export type PlacementPolicy = 'spread' | 'pack';
export type WorkerState = 'unknown' | 'up' | 'down';
/**
 * What a seat is doing as stored; `connected` and `idle` are derived from activity (seatStatus).
 * `stopped`: idle past its workshop's timeout, its VM stopped with its disk kept; it starts again
 * when its learner (or instructor) comes back.
 */
export type SeatRecordState = 'provisioning' | 'ready' | 'stopped' | 'failed' | 'removed';
export type SeatStatus = 'provisioning' | 'ready' | 'connected' | 'idle' | 'stopped' | 'failed' | 'removed';
export type WorkshopState = 'active' | 'ended';

export interface Worker {
  readonly id: string;
  readonly url: string;
  readonly token: string | null;
  readonly state: WorkerState;
  /** Most VMs it runs (its /health), null until it first answered. */
  readonly capacity: number | null;
  /** Memory the operator allows for seats on it (MiB), null: not limited by the server. */
  readonly memoryMb: number | null;
  readonly agentWorkerId: string | null;
  readonly vmCount: number | null;
  readonly lastSeenAt: number | null;
  readonly lastError: string | null;
  readonly failures: number;
  readonly createdAt: number;
}

/** A worker as placement sees it: what the database says is already placed there. */
export interface WorkerLoad {
  readonly id: string;
  readonly capacity: number;
  readonly memoryMb: number | null;
  readonly seats: number;
  readonly seatMemoryMb: number;
}

export interface Workshop {
  readonly id: string;
  readonly instructorId: string;
  readonly name: string;
  /** Seats made in advance (at creation and by add-seats). */
  readonly seats: number;
  /** Most seats joins may grow it to. */
  readonly maxSeats: number;
  readonly template: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly idleTimeoutS: number;
  readonly joinCode: string;
  readonly state: WorkshopState;
  readonly createdAt: number;
  readonly endedAt: number | null;
}

export interface NewWorkshop {
  readonly instructorId: string;
  readonly name: string;
  readonly seats: number;
  readonly maxSeats: number;
  readonly template: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly startsAt: number;
  readonly endsAt: number;
  readonly idleTimeoutS: number;
}

export interface Seat {
  readonly workshopId: string;
  readonly seatId: number;
  readonly workerId: string | null;
  readonly state: SeatRecordState;
  readonly learnerId: string | null;
  readonly learnerName: string | null;
  readonly lastActivityAt: number | null;
  readonly connections: number;
  readonly error: string | null;
  readonly createdAt: number;
}

/** A seat with where its VM lives: what provisioning and the proxy need. */
export interface PlacedSeat {
  readonly workshopId: string;
  readonly seatId: number;
  readonly worker: Worker;
}

export interface Learner {
  readonly id: string;
  readonly workshopId: string;
  readonly seatId: number;
  readonly name: string;
  readonly createdAt: number;
}

export interface Instructor {
  readonly id: string;
  readonly email: string;
  readonly createdAt: number;
}

export interface InstructorWithPassword extends Instructor {
  readonly passwordHash: string;
}

export interface Session {
  readonly instructorId: string;
  readonly email: string;
  readonly csrfToken: string;
  readonly expiresAt: number;
}

export interface AuditEntry {
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly workshopId: string | null;
  readonly detail?: string;
}

export interface AuditRecord extends AuditEntry {
  readonly id: number;
  readonly at: number;
}

export type WorkshopErrorCode =
  | 'workshop_not_found'
  | 'seat_not_found'
  | 'worker_not_found'
  | 'worker_exists'
  | 'worker_in_use'
  | 'instructor_exists'
  | 'invalid_setup_code'
  | 'already_set_up'
  | 'invalid_code'
  | 'workshop_ended'
  | 'workshop_full'
  | 'no_capacity'
  | 'invalid_field'
  /** The seat's worker did not answer (down, or hung past the call's timeout). */
  | 'worker_unreachable'
  /** The seat's worker has no VM for it (not made yet, or lost). */
  | 'vm_not_found'
  /** The seat's worker refused or failed the call; the message is the agent's. */
  | 'worker_error';

/** A refusal of the domain; the API maps each code to one HTTP status. */
export class WorkshopError extends Error {
  constructor(
    readonly code: WorkshopErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'WorkshopError';
  }
}

/**
 * What the dashboard shows for a seat: connected while a terminal is open, idle once its learner
 * left it alone past the timeout. Idle is asked first, as the idle stop does: an open terminal
 * keeps the activity fresh, so a count with old activity is one a server that died left behind.
 */
export function seatStatus(seat: Seat, idleTimeoutS: number, now: number): SeatStatus {
  if (seat.state !== 'ready') return seat.state;
  if (seat.learnerId !== null && seat.lastActivityAt !== null && now - seat.lastActivityAt > idleTimeoutS * 1000) return 'idle';
  if (seat.connections > 0) return 'connected';
  return 'ready';
}
