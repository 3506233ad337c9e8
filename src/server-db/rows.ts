// Database rows to domain records: one place that knows the column names.
import type {
  AuditRecord,
  Instructor,
  Learner,
  Seat,
  SeatRecordState,
  Worker,
  WorkerState,
  Workshop,
  WorkshopState,
} from '../workshops/model.ts';

export interface WorkerRow {
  id: string;
  url: string;
  token: string | null;
  state: string;
  capacity: number | null;
  memory_mb: number | null;
  agent_worker_id: string | null;
  vm_count: number | null;
  last_seen_at: number | null;
  last_error: string | null;
  failures: number;
  created_at: number;
}

export function workerFrom(r: WorkerRow): Worker {
  return {
    id: r.id,
    url: r.url,
    token: r.token,
    state: r.state as WorkerState,
    capacity: r.capacity,
    memoryMb: r.memory_mb,
    agentWorkerId: r.agent_worker_id,
    vmCount: r.vm_count,
    lastSeenAt: r.last_seen_at,
    lastError: r.last_error,
    failures: r.failures,
    createdAt: r.created_at,
  };
}

export interface WorkshopRow {
  id: string;
  instructor_id: string;
  name: string;
  seats: number;
  max_seats: number;
  template: string;
  vcpus: number;
  memory_mb: number;
  starts_at: number;
  ends_at: number;
  idle_timeout_s: number;
  join_code: string;
  state: string;
  created_at: number;
  ended_at: number | null;
}

export function workshopFrom(r: WorkshopRow): Workshop {
  return {
    id: r.id,
    instructorId: r.instructor_id,
    name: r.name,
    seats: r.seats,
    maxSeats: r.max_seats,
    template: r.template,
    vcpus: r.vcpus,
    memoryMb: r.memory_mb,
    startsAt: r.starts_at,
    endsAt: r.ends_at,
    idleTimeoutS: r.idle_timeout_s,
    joinCode: r.join_code,
    state: r.state as WorkshopState,
    createdAt: r.created_at,
    endedAt: r.ended_at,
  };
}

export interface SeatRow {
  workshop_id: string;
  seat_id: number;
  worker_id: string | null;
  state: string;
  learner_id: string | null;
  learner_name: string | null;
  last_activity_at: number | null;
  connections: number;
  error: string | null;
  created_at: number;
}

export const SEAT_COLUMNS = `s.workshop_id, s.seat_id, s.worker_id, s.state, s.learner_id, l.name AS learner_name,
  s.last_activity_at, s.connections, s.error, s.created_at`;

export function seatFrom(r: SeatRow): Seat {
  return {
    workshopId: r.workshop_id,
    seatId: r.seat_id,
    workerId: r.worker_id,
    state: r.state as SeatRecordState,
    learnerId: r.learner_id,
    learnerName: r.learner_name,
    lastActivityAt: r.last_activity_at,
    connections: r.connections,
    error: r.error,
    createdAt: r.created_at,
  };
}

export interface LearnerRow {
  id: string;
  workshop_id: string;
  seat_id: number;
  name: string;
  created_at: number;
}

export function learnerFrom(r: LearnerRow): Learner {
  return { id: r.id, workshopId: r.workshop_id, seatId: r.seat_id, name: r.name, createdAt: r.created_at };
}

export interface InstructorRow {
  id: string;
  email: string;
  password_hash: string;
  created_at: number;
}

export function instructorFrom(r: InstructorRow): Instructor {
  return { id: r.id, email: r.email, createdAt: r.created_at };
}

export interface AuditRow {
  id: string | number;
  at: number;
  actor: string;
  action: string;
  target: string;
  workshop_id: string | null;
  detail: string | null;
}

export function auditFrom(r: AuditRow): AuditRecord {
  return {
    id: Number(r.id),
    at: r.at,
    actor: r.actor,
    action: r.action,
    target: r.target,
    workshopId: r.workshop_id,
    ...(r.detail === null ? {} : { detail: r.detail }),
  };
}
