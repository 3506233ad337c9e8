// The ports the workshop server's domain needs, declared here and implemented by adapters: the
// database (src/server-db) and the workers' agents (src/server-workers).
import type {
  AuditEntry,
  AuditRecord,
  Instructor,
  InstructorWithPassword,
  Learner,
  NewWorkshop,
  PlacedSeat,
  PlacementPolicy,
  Seat,
  SeatRecordState,
  Session,
  Worker,
  WorkerState,
  Workshop,
} from './model.ts';

export interface NewWorker {
  readonly id: string;
  readonly url: string;
  readonly token: string | null;
  readonly memoryMb: number | null;
}

export interface WorkerObservation {
  readonly state: WorkerState;
  readonly capacity?: number;
  readonly vmCount?: number;
  readonly agentWorkerId?: string;
  readonly error?: string;
}

export interface JoinRequest {
  readonly workshopId: string;
  readonly learnerId: string;
  readonly name: string;
  readonly tokenDigest: string;
  readonly policy: PlacementPolicy;
}

export interface JoinOutcome {
  readonly learner: Learner;
  readonly seat: Seat;
  /** Set when no made seat was free and a new one was placed: it still needs its VM. */
  readonly placed: PlacedSeat | null;
}

export interface StaleSeats {
  /** How many seats went back to stopped. */
  readonly stopped: number;
  /** Seats whose VM must be deleted on their worker (if it is there at all) and made afresh. */
  readonly remade: PlacedSeat[];
}

/**
 * Everything the server keeps. Every method that hands out a seat or a slot on a worker decides
 * under row locks in one transaction, so any number of server processes may share the database.
 */
export interface WorkshopRepository {
  /** Clears the setup codes too: with an account, none may make another. */
  addInstructor(id: string, email: string, passwordHash: string): Promise<Instructor>;
  instructorByEmail(email: string): Promise<InstructorWithPassword | undefined>;
  /** Keeps a setup code's digest while no instructor exists; false (nothing kept) once one does. */
  addSetupCode(codeDigest: string, now: number): Promise<boolean>;
  /**
   * The first instructor, made with a setup code: already_set_up once any instructor exists,
   * invalid_setup_code when no kept code has this digest; every code goes with the account. Under
   * one lock, so of concurrent sign-ups on any server process exactly one makes an account.
   */
  signUpFirstInstructor(codeDigest: string, id: string, email: string, passwordHash: string): Promise<Instructor>;
  countInstructors(): Promise<number>;
  createSession(tokenDigest: string, instructorId: string, csrfToken: string, expiresAt: number): Promise<void>;
  sessionByDigest(tokenDigest: string, now: number): Promise<Session | undefined>;
  deleteSession(tokenDigest: string): Promise<void>;

  addWorker(worker: NewWorker): Promise<Worker>;
  listWorkers(): Promise<Worker[]>;
  getWorker(id: string): Promise<Worker | undefined>;
  /** Refuses (worker_in_use) while seats of active workshops are on it. */
  removeWorker(id: string): Promise<void>;
  observeWorker(id: string, observation: WorkerObservation, now: number, downAfterFailures: number): Promise<Worker>;

  /** The workshop and its first seats, placed; refuses with no_capacity (and keeps nothing) when the workers cannot hold them. */
  createWorkshop(
    id: string,
    joinCode: string,
    workshop: NewWorkshop,
    policy: PlacementPolicy,
  ): Promise<{ workshop: Workshop; placed: PlacedSeat[] }>;
  getWorkshop(id: string): Promise<Workshop | undefined>;
  workshopByCode(code: string): Promise<Workshop | undefined>;
  listWorkshops(instructorId: string): Promise<Workshop[]>;
  listSeats(workshopId: string): Promise<Seat[]>;
  getSeat(workshopId: string, seatId: number): Promise<Seat | undefined>;
  placedSeat(workshopId: string, seatId: number): Promise<PlacedSeat | undefined>;
  /** Places `count` more seats (and raises seats and max_seats by it). */
  addSeats(workshopId: string, count: number, policy: PlacementPolicy): Promise<PlacedSeat[]>;
  /** A free made seat (SKIP LOCKED), else a new one placed while max_seats allows; the learner is recorded with it. */
  join(request: JoinRequest): Promise<JoinOutcome>;
  learnerByDigest(tokenDigest: string): Promise<Learner | undefined>;
  /** False when the seat was removed meanwhile (its workshop ended), or is no longer on `onWorker` when given: nothing changed. */
  setSeatState(workshopId: string, seatId: number, state: SeatRecordState, error: string | null, onWorker?: string): Promise<boolean>;
  /** Moves the seat from `from` to `to` only if it is still in `from`: one server process of several wins. */
  claimSeatState(workshopId: string, seatId: number, from: SeatRecordState, to: SeatRecordState, error: string | null): Promise<boolean>;
  /** The seats of active workshops placed on the worker (removed ones left out). */
  seatsOnWorker(workerId: string): Promise<Seat[]>;
  /**
   * Places the seats of active workshops on `workerId` (a worker that is down) on other workers
   * with room, each then provisioning with `note`; seats no worker has room for stay. Row locks
   * (workers first, as every placement) keep two server processes from moving one seat twice.
   */
  moveSeatsOff(workerId: string, policy: PlacementPolicy, note: string): Promise<PlacedSeat[]>;
  /**
   * Stops, in the records, the seats of active workshops that are idle past their workshop's
   * timeout: ready, taken by a learner, no activity since the timeout (an open terminal refreshes
   * it; the count of open terminals is not asked, a dead server process leaves it behind). One
   * UPDATE, so of several server processes only one stops each seat; returns them (their VMs must stop).
   */
  stopIdleSeats(now: number, note: string): Promise<PlacedSeat[]>;
  /**
   * Seats left half-done since before `olderThan` (the server process making or starting them
   * stopped, or the worker hung): a stopped seat that was starting again goes back to stopped,
   * its disk untouched; any other seat provisioning, and a seat nobody has that failed, is taken
   * to be made afresh (provisioning again). Of several server processes only one takes each seat.
   */
  recoverStaleSeats(olderThan: number): Promise<StaleSeats>;
  /** Marks the workshop ended and its seats removed; returns the seats whose VMs must go. Empty when it had ended already. */
  endWorkshop(workshopId: string, now: number): Promise<PlacedSeat[]>;
  workshopsDueToEnd(now: number): Promise<Workshop[]>;
  recordActivity(workshopId: string, seatId: number, now: number): Promise<void>;
  changeConnections(workshopId: string, seatId: number, delta: 1 | -1, now: number): Promise<void>;

  audit(entry: AuditEntry, now: number): Promise<void>;
  listAudit(workshopId: string): Promise<AuditRecord[]>;
}

export interface WorkerHealth {
  readonly agentWorkerId: string;
  readonly capacity: number;
  readonly vmCount: number;
}

export interface SeatVmRequest {
  readonly workshopId: string;
  readonly seatId: number;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly template: string;
}

/** A VM as its worker reports it. */
export interface WorkerVm {
  readonly workshopId: string;
  readonly seatId: number;
  /** The agent's status: creating, running, stopped, failed, deleting. */
  readonly status: string;
  readonly lastError: string | null;
}

/** The agents on the workers, as the domain uses them. */
export interface WorkerPort {
  health(worker: Worker): Promise<WorkerHealth>;
  listVms(worker: Worker): Promise<WorkerVm[]>;
  createVm(worker: Worker, request: SeatVmRequest): Promise<void>;
  /** Deleting a VM that is not there is not an error. */
  deleteVm(worker: Worker, workshopId: string, seatId: number): Promise<void>;
  consoleLog(worker: Worker, workshopId: string, seatId: number, bytes: number): Promise<string>;
  /** Stops the VM, its disk kept; a VM that is not there is not an error. */
  stopVm(worker: Worker, workshopId: string, seatId: number): Promise<void>;
  /** Boots a stopped VM again and waits until its services answer; `missing` when the worker has no such VM. */
  startVm(worker: Worker, workshopId: string, seatId: number): Promise<'started' | 'missing'>;
}

export interface Clock {
  now(): number;
}
