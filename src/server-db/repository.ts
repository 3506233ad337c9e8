// The WorkshopRepository on PGlite or PostgreSQL. Seats are handed out under row locks: a free
// made seat is taken with FOR UPDATE SKIP LOCKED (concurrent joins each get another), and a new
// seat locks its workshop row (numbering) and the up workers' rows (capacity), so no seat is
// given twice and no worker is overfilled, whichever server process runs the transaction.
import { chooseWorker } from '../workshops/placement.ts';
import {
  WorkshopError,
  type AuditEntry,
  type AuditRecord,
  type Instructor,
  type InstructorWithPassword,
  type Learner,
  type NewWorkshop,
  type PlacedSeat,
  type PlacementPolicy,
  type Seat,
  type SeatRecordState,
  type Session,
  type Worker,
  type WorkerLoad,
  type Workshop,
} from '../workshops/model.ts';
import type { JoinOutcome, JoinRequest, NewWorker, StaleSeats, WorkerObservation, WorkshopRepository } from '../workshops/ports.ts';
import type { Database, Sql } from './database.ts';
import {
  SEAT_COLUMNS,
  auditFrom,
  instructorFrom,
  learnerFrom,
  seatFrom,
  workerFrom,
  workshopFrom,
  type AuditRow,
  type InstructorRow,
  type LearnerRow,
  type SeatRow,
  type WorkerRow,
  type WorkshopRow,
} from './rows.ts';

/** An arbitrary constant: the key of the advisory lock that makes the first instructor once (migrations hold another). */
const FIRST_INSTRUCTOR_LOCK = 7_301_443;

export class SqlWorkshopRepository implements WorkshopRepository {
  constructor(
    private readonly db: Database,
    private readonly now: () => number = Date.now,
  ) {}

  async addInstructor(id: string, email: string, passwordHash: string): Promise<Instructor> {
    return this.db.transaction(async (tx) => {
      // Under the sign-up's lock: an account made here and a first sign-up never both pass "no instructor yet".
      await tx.query('SELECT pg_advisory_xact_lock($1)', [FIRST_INSTRUCTOR_LOCK]);
      const rows = await tx.query<InstructorRow>(
        'INSERT INTO instructors (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING RETURNING *',
        [id, email, passwordHash, this.now()],
      );
      const row = rows[0];
      if (!row) throw new WorkshopError('instructor_exists', `an instructor ${email} exists already`);
      // An account exists now: no setup code may make another.
      await tx.query('DELETE FROM setup_codes');
      return instructorFrom(row);
    });
  }

  async addSetupCode(codeDigest: string, now: number): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [FIRST_INSTRUCTOR_LOCK]);
      const rows = await tx.query<{ code_digest: string }>(
        `INSERT INTO setup_codes (code_digest, created_at) SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM instructors)
         RETURNING code_digest`,
        [codeDigest, now],
      );
      return rows.length > 0;
    });
  }

  async signUpFirstInstructor(codeDigest: string, id: string, email: string, passwordHash: string): Promise<Instructor> {
    return this.db.transaction(async (tx) => {
      // One sign-up at a time across every server process on this database; READ COMMITTED, so the
      // statements after the lock see the account a sign-up before it made.
      await tx.query('SELECT pg_advisory_xact_lock($1)', [FIRST_INSTRUCTOR_LOCK]);
      const existing = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM instructors');
      if ((existing[0]?.n ?? 0) > 0) throw new WorkshopError('already_set_up', 'this server has an instructor account already: log in');
      const code = await tx.query<{ code_digest: string }>('SELECT code_digest FROM setup_codes WHERE code_digest = $1', [codeDigest]);
      if (code.length === 0) throw new WorkshopError('invalid_setup_code', "this setup code is not valid: copy it from the server's log");
      const rows = await tx.query<InstructorRow>(
        'INSERT INTO instructors (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING *',
        [id, email, passwordHash, this.now()],
      );
      await tx.query('DELETE FROM setup_codes');
      return instructorFrom(rows[0] as InstructorRow);
    });
  }

  async instructorByEmail(email: string): Promise<InstructorWithPassword | undefined> {
    const row = (await this.db.query<InstructorRow>('SELECT * FROM instructors WHERE email = $1', [email]))[0];
    return row ? { ...instructorFrom(row), passwordHash: row.password_hash } : undefined;
  }

  async countInstructors(): Promise<number> {
    return (await this.db.query<{ n: number }>('SELECT count(*)::int AS n FROM instructors'))[0]?.n ?? 0;
  }

  async createSession(tokenDigest: string, instructorId: string, csrfToken: string, expiresAt: number): Promise<void> {
    await this.db.query('INSERT INTO sessions (token_digest, instructor_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4)', [
      tokenDigest,
      instructorId,
      csrfToken,
      expiresAt,
    ]);
  }

  async sessionByDigest(tokenDigest: string, now: number): Promise<Session | undefined> {
    const row = (
      await this.db.query<{ instructor_id: string; email: string; csrf_token: string; expires_at: number }>(
        `SELECT s.instructor_id, i.email, s.csrf_token, s.expires_at FROM sessions s JOIN instructors i ON i.id = s.instructor_id
         WHERE s.token_digest = $1 AND s.expires_at > $2`,
        [tokenDigest, now],
      )
    )[0];
    return row ? { instructorId: row.instructor_id, email: row.email, csrfToken: row.csrf_token, expiresAt: row.expires_at } : undefined;
  }

  async deleteSession(tokenDigest: string): Promise<void> {
    await this.db.query('DELETE FROM sessions WHERE token_digest = $1', [tokenDigest]);
  }

  async addWorker(worker: NewWorker): Promise<Worker> {
    const rows = await this.db.query<WorkerRow>(
      `INSERT INTO workers (id, url, token, memory_mb, created_at) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT DO NOTHING RETURNING *`,
      [worker.id, worker.url, worker.token, worker.memoryMb, this.now()],
    );
    const row = rows[0];
    if (!row) throw new WorkshopError('worker_exists', `a worker with id ${worker.id} or URL ${worker.url} exists already`);
    return workerFrom(row);
  }

  async listWorkers(): Promise<Worker[]> {
    return (await this.db.query<WorkerRow>('SELECT * FROM workers ORDER BY id')).map(workerFrom);
  }

  async getWorker(id: string): Promise<Worker | undefined> {
    const row = (await this.db.query<WorkerRow>('SELECT * FROM workers WHERE id = $1', [id]))[0];
    return row ? workerFrom(row) : undefined;
  }

  async removeWorker(id: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const found = await tx.query<{ id: string }>('SELECT id FROM workers WHERE id = $1 FOR UPDATE', [id]);
      if (found.length === 0) throw new WorkshopError('worker_not_found', `no worker ${id}`);
      const used = await tx.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM seats s JOIN workshops w ON w.id = s.workshop_id
         WHERE s.worker_id = $1 AND s.state <> 'removed' AND w.state = 'active'`,
        [id],
      );
      const n = used[0]?.n ?? 0;
      if (n > 0) throw new WorkshopError('worker_in_use', `worker ${id} holds ${n} seats of active workshops; end them first`);
      await tx.query('DELETE FROM workers WHERE id = $1', [id]);
    });
  }

  async observeWorker(id: string, o: WorkerObservation, now: number, downAfterFailures: number): Promise<Worker> {
    const rows =
      o.state === 'up'
        ? await this.db.query<WorkerRow>(
            `UPDATE workers SET state = 'up', failures = 0, capacity = $2, vm_count = $3, agent_worker_id = $4, last_seen_at = $5,
               last_error = NULL WHERE id = $1 RETURNING *`,
            [id, o.capacity ?? null, o.vmCount ?? null, o.agentWorkerId ?? null, now],
          )
        : await this.db.query<WorkerRow>(
            `UPDATE workers SET failures = failures + 1, last_error = $2,
               state = CASE WHEN failures + 1 >= $3 OR state = 'unknown' THEN 'down' ELSE state END
             WHERE id = $1 RETURNING *`,
            [id, o.error ?? 'no answer', downAfterFailures],
          );
    const row = rows[0];
    if (!row) throw new WorkshopError('worker_not_found', `no worker ${id}`);
    return workerFrom(row);
  }

  async createWorkshop(
    id: string,
    joinCode: string,
    w: NewWorkshop,
    policy: PlacementPolicy,
  ): Promise<{ workshop: Workshop; placed: PlacedSeat[] }> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<WorkshopRow>(
        `INSERT INTO workshops (id, instructor_id, name, seats, max_seats, next_seat, template, vcpus, memory_mb, starts_at, ends_at,
           idle_timeout_s, join_code, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING *`,
        [
          id,
          w.instructorId,
          w.name,
          w.seats,
          w.maxSeats,
          w.seats + 1,
          w.template,
          w.vcpus,
          w.memoryMb,
          w.startsAt,
          w.endsAt,
          w.idleTimeoutS,
          joinCode,
          this.now(),
        ],
      );
      const workshop = workshopFrom(rows[0] as WorkshopRow);
      const seatIds = Array.from({ length: w.seats }, (_, i) => i + 1);
      const placed = await this.placeSeats(tx, workshop, seatIds, policy, null);
      return { workshop, placed };
    });
  }

  async getWorkshop(id: string): Promise<Workshop | undefined> {
    const row = (await this.db.query<WorkshopRow>('SELECT * FROM workshops WHERE id = $1', [id]))[0];
    return row ? workshopFrom(row) : undefined;
  }

  async workshopByCode(code: string): Promise<Workshop | undefined> {
    const row = (await this.db.query<WorkshopRow>('SELECT * FROM workshops WHERE join_code = $1', [code]))[0];
    return row ? workshopFrom(row) : undefined;
  }

  async listWorkshops(instructorId: string): Promise<Workshop[]> {
    return (
      await this.db.query<WorkshopRow>('SELECT * FROM workshops WHERE instructor_id = $1 ORDER BY created_at DESC', [instructorId])
    ).map(workshopFrom);
  }

  async listSeats(workshopId: string): Promise<Seat[]> {
    const rows = await this.db.query<SeatRow>(
      `SELECT ${SEAT_COLUMNS} FROM seats s LEFT JOIN learners l ON l.id = s.learner_id WHERE s.workshop_id = $1 ORDER BY s.seat_id`,
      [workshopId],
    );
    return rows.map(seatFrom);
  }

  async getSeat(workshopId: string, seatId: number): Promise<Seat | undefined> {
    return getSeat(this.db, workshopId, seatId);
  }

  async placedSeat(workshopId: string, seatId: number): Promise<PlacedSeat | undefined> {
    const row = (
      await this.db.query<WorkerRow>(
        `SELECT w.* FROM seats s JOIN workers w ON w.id = s.worker_id WHERE s.workshop_id = $1 AND s.seat_id = $2 AND s.state <> 'removed'`,
        [workshopId, seatId],
      )
    )[0];
    return row ? { workshopId, seatId, worker: workerFrom(row) } : undefined;
  }

  async addSeats(workshopId: string, count: number, policy: PlacementPolicy): Promise<PlacedSeat[]> {
    return this.db.transaction(async (tx) => {
      const rows = await tx.query<WorkshopRow & { next_seat: number }>(
        `UPDATE workshops SET next_seat = next_seat + $2, seats = seats + $2, max_seats = max_seats + $2
         WHERE id = $1 AND state = 'active' RETURNING *`,
        [workshopId, count],
      );
      const row = rows[0];
      if (!row) throw new WorkshopError('workshop_ended', `workshop ${workshopId} is not active`);
      const first = row.next_seat - count;
      return this.placeSeats(
        tx,
        workshopFrom(row),
        Array.from({ length: count }, (_, i) => first + i),
        policy,
        null,
      );
    });
  }

  async join(r: JoinRequest): Promise<JoinOutcome> {
    return this.db.transaction(async (tx) => {
      const now = this.now();
      // A made seat nobody has, on a worker that is up before one on a worker that is not (its
      // learner could not use it): concurrent joins skip each other's locked seat rows and take
      // another; the workers' rows are only read, never locked, so joins wait on no placement.
      const free = await tx.query<{ seat_id: number }>(
        `SELECT s.seat_id FROM seats s LEFT JOIN workers k ON k.id = s.worker_id
         WHERE s.workshop_id = $1 AND s.learner_id IS NULL AND s.state IN ('ready', 'provisioning')
         ORDER BY coalesce(k.state = 'up', false) DESC, (s.state = 'ready') DESC, s.seat_id LIMIT 1 FOR UPDATE OF s SKIP LOCKED`,
        [r.workshopId],
      );
      let seatId = free[0]?.seat_id;
      let placed: PlacedSeat | null = null;
      if (seatId !== undefined) {
        await tx.query('UPDATE seats SET learner_id = $3, last_activity_at = $4 WHERE workshop_id = $1 AND seat_id = $2', [
          r.workshopId,
          seatId,
          r.learnerId,
          now,
        ]);
      } else {
        // None free: a new seat, numbered under the workshop's row lock, within max_seats.
        const rows = await tx.query<WorkshopRow & { next_seat: number }>('SELECT * FROM workshops WHERE id = $1 FOR UPDATE', [
          r.workshopId,
        ]);
        const row = rows[0];
        if (!row || row.state !== 'active') throw new WorkshopError('workshop_ended', `workshop ${r.workshopId} has ended`);
        if (row.next_seat > row.max_seats) throw new WorkshopError('workshop_full', `all ${row.max_seats} seats of the workshop are taken`);
        seatId = row.next_seat;
        await tx.query('UPDATE workshops SET next_seat = next_seat + 1 WHERE id = $1', [r.workshopId]);
        [placed = null] = await this.placeSeats(tx, workshopFrom(row), [seatId], r.policy, r.learnerId);
      }
      const learner = await tx.query<LearnerRow>(
        'INSERT INTO learners (id, workshop_id, seat_id, name, token_digest, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
        [r.learnerId, r.workshopId, seatId, r.name, r.tokenDigest, now],
      );
      const seat = await getSeat(tx, r.workshopId, seatId);
      if (!seat) throw new Error(`seat ${r.workshopId}/${seatId} vanished inside its transaction`);
      return { learner: learnerFrom(learner[0] as LearnerRow), seat, placed };
    });
  }

  async learnerByDigest(tokenDigest: string): Promise<Learner | undefined> {
    const row = (await this.db.query<LearnerRow>('SELECT * FROM learners WHERE token_digest = $1', [tokenDigest]))[0];
    return row ? learnerFrom(row) : undefined;
  }

  async setSeatState(
    workshopId: string,
    seatId: number,
    state: SeatRecordState,
    error: string | null,
    onWorker?: string,
  ): Promise<boolean> {
    // A removed seat stays removed: its workshop ended while the VM was being made. A seat moved
    // to another worker meanwhile is not this VM's any more.
    const rows = await this.db.query<{ seat_id: number }>(
      `UPDATE seats SET state = $3, error = $4, state_since = $5, waking = false
       WHERE workshop_id = $1 AND seat_id = $2 AND state <> 'removed' AND ($6::text IS NULL OR worker_id = $6) RETURNING seat_id`,
      [workshopId, seatId, state, error, this.now(), onWorker ?? null],
    );
    return rows.length > 0;
  }

  async claimSeatState(
    workshopId: string,
    seatId: number,
    from: SeatRecordState,
    to: SeatRecordState,
    error: string | null,
  ): Promise<boolean> {
    // stopped → provisioning: the seat's VM comes up again from its disk. Marked, so a start cut
    // short goes back to stopped rather than to a fresh VM; safe for any such claim (a reset of a
    // stopped seat too): the next start makes a fresh VM when its worker has none.
    const rows = await this.db.query<{ seat_id: number }>(
      `UPDATE seats SET state = $4, error = $5, state_since = $6, waking = ($3 = 'stopped' AND $4 = 'provisioning')
       WHERE workshop_id = $1 AND seat_id = $2 AND state = $3 RETURNING seat_id`,
      [workshopId, seatId, from, to, error, this.now()],
    );
    return rows.length > 0;
  }

  async seatsOnWorker(workerId: string): Promise<Seat[]> {
    const rows = await this.db.query<SeatRow>(
      `SELECT ${SEAT_COLUMNS} FROM seats s JOIN workshops w ON w.id = s.workshop_id LEFT JOIN learners l ON l.id = s.learner_id
       WHERE s.worker_id = $1 AND s.state <> 'removed' AND w.state = 'active' ORDER BY s.workshop_id, s.seat_id`,
      [workerId],
    );
    return rows.map(seatFrom);
  }

  async moveSeatsOff(workerId: string, policy: PlacementPolicy, note: string): Promise<PlacedSeat[]> {
    return this.db.transaction(async (tx) => {
      const { workers, candidates } = await lockWorkerLoads(tx);
      const seats = await tx.query<{ workshop_id: string; seat_id: number; memory_mb: number }>(
        `SELECT s.workshop_id, s.seat_id, s.memory_mb FROM seats s JOIN workshops w ON w.id = s.workshop_id
         WHERE s.worker_id = $1 AND s.state <> 'removed' AND w.state = 'active'
         ORDER BY s.workshop_id, s.seat_id FOR UPDATE OF s SKIP LOCKED`,
        [workerId],
      );
      const moved: PlacedSeat[] = [];
      for (const seat of seats) {
        const choice = chooseWorker(
          candidates.filter((c) => c.id !== workerId),
          policy,
          seat.memory_mb,
        );
        if (!choice) continue;
        const index = candidates.indexOf(choice);
        candidates[index] = { ...choice, seats: choice.seats + 1, seatMemoryMb: choice.seatMemoryMb + seat.memory_mb };
        await tx.query(
          `UPDATE seats SET worker_id = $3, state = 'provisioning', error = $4, state_since = $5, waking = false
           WHERE workshop_id = $1 AND seat_id = $2`,
          [seat.workshop_id, seat.seat_id, choice.id, note, this.now()],
        );
        moved.push({ workshopId: seat.workshop_id, seatId: seat.seat_id, worker: workers.find((w) => w.id === choice.id) as Worker });
      }
      return moved;
    });
  }

  async stopIdleSeats(now: number, note: string): Promise<PlacedSeat[]> {
    // The same test as seatStatus's `idle`, so the dashboard's idle seats are the ones stopped. It
    // rests on the last activity alone, not on the count of open terminals: a server process that
    // died leaves its terminals counted for good, while an open terminal refreshes the activity.
    // Stopped, the seat has no terminal left: a count left behind is cleared.
    const rows = await this.db.query<WorkerRow & { stopped_workshop_id: string; stopped_seat_id: number }>(
      `WITH stopped AS (
         UPDATE seats s SET state = 'stopped', error = $2, state_since = $1, connections = 0
           FROM workshops w
          WHERE w.id = s.workshop_id AND w.state = 'active' AND s.state = 'ready' AND s.learner_id IS NOT NULL
            AND s.last_activity_at IS NOT NULL AND s.last_activity_at < $1 - w.idle_timeout_s * 1000.0
          RETURNING s.workshop_id, s.seat_id, s.worker_id)
       SELECT k.*, stopped.workshop_id AS stopped_workshop_id, stopped.seat_id AS stopped_seat_id
         FROM stopped JOIN workers k ON k.id = stopped.worker_id`,
      [now, note],
    );
    return rows.map((r) => ({ workshopId: r.stopped_workshop_id, seatId: r.stopped_seat_id, worker: workerFrom(r) }));
  }

  async recoverStaleSeats(olderThan: number): Promise<StaleSeats> {
    const now = this.now();
    // Each a single UPDATE that moves state_since on: of several server processes only one takes each seat.
    const stopped = await this.db.query<{ seat_id: number }>(
      `UPDATE seats SET state = 'stopped', waking = false, state_since = $2,
         error = 'its start was cut short (the server starting it may have stopped); it starts again when its learner comes back'
       WHERE state = 'provisioning' AND waking AND state_since < $1 RETURNING seat_id`,
      [olderThan, now],
    );
    const remade = await this.db.query<WorkerRow & { remade_workshop_id: string; remade_seat_id: number }>(
      `WITH remade AS (
         UPDATE seats s SET state = 'provisioning', waking = false, state_since = $2,
           error = 'its VM was not made (the server making it may have stopped, or the worker refused); a fresh one is being made'
           FROM workshops w
          WHERE w.id = s.workshop_id AND w.state = 'active' AND s.worker_id IS NOT NULL AND s.state_since < $1
            AND ((s.state = 'provisioning' AND NOT s.waking) OR (s.state = 'failed' AND s.learner_id IS NULL))
          RETURNING s.workshop_id, s.seat_id, s.worker_id)
       SELECT k.*, remade.workshop_id AS remade_workshop_id, remade.seat_id AS remade_seat_id
         FROM remade JOIN workers k ON k.id = remade.worker_id ORDER BY remade.workshop_id, remade.seat_id`,
      [olderThan, now],
    );
    return {
      stopped: stopped.length,
      remade: remade.map((r) => ({ workshopId: r.remade_workshop_id, seatId: r.remade_seat_id, worker: workerFrom(r) })),
    };
  }

  async endWorkshop(workshopId: string, now: number): Promise<PlacedSeat[]> {
    return this.db.transaction(async (tx) => {
      const ended = await tx.query<{ id: string }>(
        `UPDATE workshops SET state = 'ended', ended_at = $2 WHERE id = $1 AND state = 'active' RETURNING id`,
        [workshopId, now],
      );
      if (ended.length === 0) return [];
      const rows = await tx.query<WorkerRow & { seat_id: number }>(
        `WITH removed AS (
           UPDATE seats SET state = 'removed', connections = 0 WHERE workshop_id = $1 AND state <> 'removed' RETURNING seat_id, worker_id
         )
         SELECT w.*, r.seat_id FROM removed r JOIN workers w ON w.id = r.worker_id ORDER BY r.seat_id`,
        [workshopId],
      );
      return rows.map((row) => ({ workshopId, seatId: row.seat_id, worker: workerFrom(row) }));
    });
  }

  async workshopsDueToEnd(now: number): Promise<Workshop[]> {
    return (await this.db.query<WorkshopRow>(`SELECT * FROM workshops WHERE state = 'active' AND ends_at <= $1`, [now])).map(workshopFrom);
  }

  async recordActivity(workshopId: string, seatId: number, now: number): Promise<void> {
    await this.db.query('UPDATE seats SET last_activity_at = $3 WHERE workshop_id = $1 AND seat_id = $2', [workshopId, seatId, now]);
  }

  async changeConnections(workshopId: string, seatId: number, delta: 1 | -1, now: number): Promise<void> {
    await this.db.query(
      'UPDATE seats SET connections = greatest(0, connections + $3), last_activity_at = $4 WHERE workshop_id = $1 AND seat_id = $2',
      [workshopId, seatId, delta, now],
    );
  }

  async audit(entry: AuditEntry, now: number): Promise<void> {
    await this.db.query('INSERT INTO audit (at, actor, action, target, workshop_id, detail) VALUES ($1, $2, $3, $4, $5, $6)', [
      now,
      entry.actor,
      entry.action,
      entry.target,
      entry.workshopId,
      entry.detail ?? null,
    ]);
  }

  async listAudit(workshopId: string): Promise<AuditRecord[]> {
    return (await this.db.query<AuditRow>('SELECT * FROM audit WHERE workshop_id = $1 ORDER BY id', [workshopId])).map(auditFrom);
  }

  /**
   * Places seats on workers with room, inside the caller's transaction: the up workers' rows are
   * locked (in id order, so two placers never deadlock), their load read, one seat at a time chosen.
   */
  private async placeSeats(
    tx: Sql,
    workshop: Workshop,
    seatIds: readonly number[],
    policy: PlacementPolicy,
    learnerId: string | null,
  ): Promise<PlacedSeat[]> {
    if (seatIds.length === 0) return [];
    const { workers, candidates } = await lockWorkerLoads(tx);
    const placed: PlacedSeat[] = [];
    const now = this.now();
    for (const seatId of seatIds) {
      const choice = chooseWorker(candidates, policy, workshop.memoryMb);
      if (!choice)
        throw new WorkshopError('no_capacity', `no worker has room for ${seatIds.length} more seats of ${workshop.memoryMb} MiB`);
      const index = candidates.indexOf(choice);
      candidates[index] = { ...choice, seats: choice.seats + 1, seatMemoryMb: choice.seatMemoryMb + workshop.memoryMb };
      await tx.query(
        `INSERT INTO seats (workshop_id, seat_id, worker_id, state, memory_mb, learner_id, last_activity_at, created_at, state_since)
         VALUES ($1, $2, $3, 'provisioning', $4, $5, $6, $7, $7)`,
        [workshop.id, seatId, choice.id, workshop.memoryMb, learnerId, learnerId === null ? null : now, now],
      );
      const worker = workers.find((w) => w.id === choice.id) as Worker;
      placed.push({ workshopId: workshop.id, seatId, worker });
    }
    return placed;
  }
}

/** The up workers, locked in id order (so two placers never deadlock), with the load each carries. */
async function lockWorkerLoads(tx: Sql): Promise<{ workers: Worker[]; candidates: WorkerLoad[] }> {
  const workers = (
    await tx.query<WorkerRow>(`SELECT * FROM workers WHERE state = 'up' AND capacity IS NOT NULL ORDER BY id FOR UPDATE`)
  ).map(workerFrom);
  const loads = await tx.query<{ worker_id: string; seats: number; memory: number }>(
    `SELECT worker_id, count(*)::int AS seats, coalesce(sum(memory_mb), 0)::int AS memory FROM seats
     WHERE state <> 'removed' AND worker_id IS NOT NULL GROUP BY worker_id`,
  );
  const byId = new Map(loads.map((l) => [l.worker_id, l]));
  const candidates: WorkerLoad[] = workers.map((w) => ({
    id: w.id,
    capacity: w.capacity ?? 0,
    memoryMb: w.memoryMb,
    seats: byId.get(w.id)?.seats ?? 0,
    seatMemoryMb: byId.get(w.id)?.memory ?? 0,
  }));
  return { workers, candidates };
}

async function getSeat(on: Sql, workshopId: string, seatId: number): Promise<Seat | undefined> {
  const row = (
    await on.query<SeatRow>(
      `SELECT ${SEAT_COLUMNS} FROM seats s LEFT JOIN learners l ON l.id = s.learner_id WHERE s.workshop_id = $1 AND s.seat_id = $2`,
      [workshopId, seatId],
    )
  )[0];
  return row ? seatFrom(row) : undefined;
}
