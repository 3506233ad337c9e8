// The workshop server's use cases: create a workshop and make its seats in parallel, let learners
// join (a made seat at once, else a new one), reset, add seats, read a console, end. Every decision
// about who gets which seat on which worker is the repository's, under row locks.
import { newId, newJoinCode, newSecretToken, newWorkshopId, normalizeJoinCode, JOIN_CODE_PATTERN, tokenDigest } from './codes.ts';
import {
  WorkshopError,
  type Learner,
  type NewWorkshop,
  type PlacedSeat,
  type PlacementPolicy,
  type Seat,
  type Worker,
  type Workshop,
} from './model.ts';
import type { Clock, WorkerPort, WorkshopRepository } from './ports.ts';

export interface ServiceLog {
  warn(context: Record<string, unknown>, message: string): void;
  info(context: Record<string, unknown>, message: string): void;
}

export interface WorkshopServiceOptions {
  readonly repo: WorkshopRepository;
  readonly workers: WorkerPort;
  readonly clock: Clock;
  readonly policy: PlacementPolicy;
  readonly log: ServiceLog;
  /** A seat still provisioning after this long is recovered (its VM's maker may be gone): see failStale. */
  readonly provisioningTimeoutMs: number;
  /** Told of every seat's provisioning result (metrics). */
  readonly onProvisioned?: (result: 'ready' | 'failed') => void;
}

export interface JoinResult {
  readonly workshop: Workshop;
  readonly learner: Learner;
  readonly seat: Seat;
  /** The learner's secret: their cookie and their rejoin token. Undefined when they came back with it. */
  readonly newToken: string | undefined;
}

const JOIN_CODE = new RegExp(JOIN_CODE_PATTERN);

export class WorkshopService {
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly o: WorkshopServiceOptions) {}

  get repo(): WorkshopRepository {
    return this.o.repo;
  }

  async createWorkshop(input: NewWorkshop): Promise<Workshop> {
    if (input.endsAt <= input.startsAt) throw new WorkshopError('invalid_field', 'ends_at must be after starts_at');
    if (input.endsAt <= this.o.clock.now()) throw new WorkshopError('invalid_field', 'ends_at must be in the future');
    if (input.maxSeats < input.seats) throw new WorkshopError('invalid_field', 'max_seats must be at least seats');
    // A clash of random codes is next to impossible; the unique index catches it and we draw again.
    for (let attempt = 0; ; attempt++) {
      try {
        const { workshop, placed } = await this.o.repo.createWorkshop(newWorkshopId(), newJoinCode(), input, this.o.policy);
        this.provisionInBackground(workshop, placed);
        return workshop;
      } catch (error) {
        if (attempt < 3 && isUniqueViolation(error)) continue;
        throw error;
      }
    }
  }

  async workshopOf(instructorId: string, workshopId: string): Promise<Workshop> {
    const workshop = await this.o.repo.getWorkshop(workshopId);
    // Another instructor's workshop is not found, not forbidden: ids reveal nothing.
    if (!workshop || workshop.instructorId !== instructorId) throw new WorkshopError('workshop_not_found', `no workshop ${workshopId}`);
    return workshop;
  }

  /** A learner joins with the code; coming back with their token gives the same seat. */
  async join(codeText: string, name: string, learnerToken: string | undefined): Promise<JoinResult> {
    const code = normalizeJoinCode(codeText);
    const workshop = JOIN_CODE.test(code) ? await this.o.repo.workshopByCode(code) : undefined;
    if (!workshop) throw new WorkshopError('invalid_code', 'no workshop has this join code');
    this.refuseEnded(workshop);
    if (learnerToken !== undefined) {
      const learner = await this.o.repo.learnerByDigest(tokenDigest(learnerToken));
      if (learner && learner.workshopId === workshop.id)
        return { workshop, learner, seat: await this.wake(workshop, await this.seat(learner)), newToken: undefined };
    }
    const token = newSecretToken();
    const outcome = await this.o.repo.join({
      workshopId: workshop.id,
      learnerId: newId('lr'),
      name,
      tokenDigest: tokenDigest(token),
      policy: this.o.policy,
    });
    if (outcome.placed) this.provisionInBackground(workshop, [outcome.placed]);
    return { workshop, learner: outcome.learner, seat: outcome.seat, newToken: token };
  }

  /** The learner a token belongs to (cookie or rejoin link), with their workshop and seat. */
  async learnerOf(token: string): Promise<{ workshop: Workshop; learner: Learner; seat: Seat } | undefined> {
    const learner = await this.o.repo.learnerByDigest(tokenDigest(token));
    if (!learner) return undefined;
    const workshop = await this.o.repo.getWorkshop(learner.workshopId);
    if (!workshop) return undefined;
    return { workshop, learner, seat: await this.wake(workshop, await this.seat(learner)) };
  }

  /**
   * A stopped seat starts again because someone came back to it (its learner's page or rejoin,
   * the instructor opening it): at once `provisioning`, in the background its VM boots again
   * from its own disk, then `ready`. Any other seat is returned as it is.
   */
  async wake(workshop: Workshop, seat: Seat): Promise<Seat> {
    if (seat.state !== 'stopped' || workshop.state !== 'active') return seat;
    const now = this.o.clock.now();
    // Of several server processes (or requests) only one claims it; the others see it provisioning.
    if (
      await this.o.repo.claimSeatState(
        seat.workshopId,
        seat.seatId,
        'stopped',
        'provisioning',
        'starting again after it was stopped while idle',
      )
    ) {
      // Fresh activity, or the next round would find it idle again the moment it is ready.
      await this.o.repo.recordActivity(seat.workshopId, seat.seatId, now);
      const placed = await this.o.repo.placedSeat(seat.workshopId, seat.seatId);
      if (placed) this.track(this.restart(workshop, placed));
    }
    return this.seatById(seat.workshopId, seat.seatId);
  }

  /**
   * Stops the VMs of seats idle past their workshop's timeout (run periodically; any server
   * process may): the worker keeps their disks, and each starts again when its learner comes back.
   */
  async stopIdle(): Promise<number> {
    const seats = await this.o.repo.stopIdleSeats(this.o.clock.now(), 'stopped while idle; it starts again when its learner comes back');
    const results = await Promise.allSettled(seats.map((s) => this.o.workers.stopVm(s.worker, s.workshopId, s.seatId)));
    results.forEach((result, i) => {
      const seat = seats[i];
      if (!seat) return;
      const where = `${seat.workshopId}/${seat.seatId}`;
      // The record says stopped either way: a start later finds the VM running and keeps it.
      if (result.status === 'rejected')
        this.o.log.warn({ err: result.reason, seat: where, worker: seat.worker.id }, 'could not stop an idle seat');
      else this.o.log.info({ seat: where, worker: seat.worker.id }, 'idle seat stopped');
    });
    return seats.length;
  }

  /**
   * Deletes the seat's VM and makes a fresh one (same worker, same learner). The worker is asked
   * first: one that does not answer or refuses leaves the seat as it was, and the refusal is thrown.
   */
  async resetSeat(workshop: Workshop, seatId: number): Promise<Seat> {
    this.refuseEnded(workshop);
    const placed = await this.placed(workshop.id, seatId);
    const before = await this.seatById(workshop.id, seatId);
    await this.o.workers.deleteVm(placed.worker, workshop.id, seatId);
    // Only from the state read before the delete: a round or a wake that took the seat meanwhile
    // (it saw the VM gone) makes the fresh VM itself, and a removed seat stays removed.
    if (before.state !== 'removed' && (await this.o.repo.claimSeatState(workshop.id, seatId, before.state, 'provisioning', null)))
      this.provisionInBackground(workshop, [placed]);
    return this.seatById(workshop.id, seatId);
  }

  async addSeats(workshop: Workshop, count: number): Promise<Seat[]> {
    this.refuseEnded(workshop);
    const placed = await this.o.repo.addSeats(workshop.id, count, this.o.policy);
    this.provisionInBackground(workshop, placed);
    return Promise.all(placed.map((p) => this.seatById(p.workshopId, p.seatId)));
  }

  async consoleLog(workshop: Workshop, seatId: number, bytes: number): Promise<string> {
    const placed = await this.placed(workshop.id, seatId);
    return this.o.workers.consoleLog(placed.worker, workshop.id, seatId, bytes);
  }

  /** Ends the workshop: every seat's VM deleted on its worker. Ending twice does nothing more. */
  async end(workshopId: string): Promise<{ removed: number; failed: number }> {
    const seats = await this.o.repo.endWorkshop(workshopId, this.o.clock.now());
    const results = await Promise.allSettled(seats.map((s) => this.o.workers.deleteVm(s.worker, s.workshopId, s.seatId)));
    results.forEach((result, i) => {
      if (result.status === 'rejected')
        this.o.log.warn({ err: result.reason, seat: `${workshopId}/${seats[i]?.seatId}` }, 'could not delete a VM of an ended workshop');
    });
    return {
      removed: results.filter((r) => r.status === 'fulfilled').length,
      failed: results.filter((r) => r.status === 'rejected').length,
    };
  }

  /** Ends every workshop past its end time (run periodically; any server process may). */
  async endDue(): Promise<number> {
    const due = await this.o.repo.workshopsDueToEnd(this.o.clock.now());
    for (const workshop of due) {
      await this.end(workshop.id);
      this.o.log.info({ workshop: workshop.id }, 'workshop ended at its end time');
    }
    return due.length;
  }

  /**
   * Brings the server's records and a worker that answers back in line (a worker restarted or
   * recovered from a crash may have lost VMs, or kept some the server no longer wants): a ready
   * seat whose VM is gone gets a fresh one (its files went with the VM), a seat whose VM the
   * agent reports failed is failed with the agent's reason, and a VM of one of this server's
   * workshops that no seat owns any more (its workshop ended, or the delete did not reach the
   * worker) is deleted. VMs of workshops the server does not know are left alone.
   */
  async reconcileWorker(worker: Worker): Promise<{ recreated: number; stopped: number; failed: number; orphansDeleted: number }> {
    const vms = await this.o.workers.listVms(worker);
    const vmOf = new Map(vms.map((vm) => [`${vm.workshopId}/${vm.seatId}`, vm]));
    const counts = { recreated: 0, stopped: 0, failed: 0, orphansDeleted: 0 };
    const seats = await this.o.repo.seatsOnWorker(worker.id);
    for (const seat of seats) {
      if (seat.state !== 'ready') continue; // provisioning: being made; stopped: wakes on its own; failed: the instructor resets it
      const vm = vmOf.get(`${seat.workshopId}/${seat.seatId}`);
      const where = `${seat.workshopId}/${seat.seatId}`;
      if (vm === undefined) {
        const note = `its VM was lost on worker ${worker.id}; a fresh one is being made`;
        if (!(await this.o.repo.claimSeatState(seat.workshopId, seat.seatId, 'ready', 'provisioning', note))) continue;
        const workshop = await this.o.repo.getWorkshop(seat.workshopId);
        if (!workshop) continue;
        this.o.log.warn({ seat: where, worker: worker.id }, 'seat VM lost on its worker; making a fresh one');
        this.provisionInBackground(workshop, [{ workshopId: seat.workshopId, seatId: seat.seatId, worker }]);
        counts.recreated++;
      } else if (vm.status === 'stopped') {
        // Stopped on the worker itself (an operator's `clarateach vm stop`): the seat shows it and wakes like an idle one.
        if (
          await this.o.repo.claimSeatState(seat.workshopId, seat.seatId, 'ready', 'stopped', `its VM was stopped on worker ${worker.id}`)
        ) {
          this.o.log.info({ seat: where, worker: worker.id }, 'seat VM found stopped on its worker');
          counts.stopped++;
        }
      } else if (vm.status === 'failed') {
        const reason = `its VM failed on worker ${worker.id}: ${vm.lastError ?? 'no reason given'}; reset it`;
        if (await this.o.repo.claimSeatState(seat.workshopId, seat.seatId, 'ready', 'failed', reason)) {
          this.o.log.warn({ seat: where, worker: worker.id, reason: vm.lastError }, 'seat VM failed on its worker');
          counts.failed++;
        }
      }
    }
    const wanted = new Set(seats.map((s) => `${s.workshopId}/${s.seatId}`));
    for (const vm of vms) {
      const key = `${vm.workshopId}/${vm.seatId}`;
      if (wanted.has(key) || vm.status === 'deleting') continue;
      // Looked up now, not from the list above: a seat placed since then is not an orphan.
      const workshop = await this.o.repo.getWorkshop(vm.workshopId);
      if (!workshop) continue; // not this server's
      const seat = await this.o.repo.getSeat(vm.workshopId, vm.seatId);
      if (seat && seat.state !== 'removed' && seat.workerId === worker.id && workshop.state === 'active') continue;
      this.o.log.warn({ vm: key, worker: worker.id }, 'deleting a VM no seat owns');
      await this.o.workers.deleteVm(worker, vm.workshopId, vm.seatId);
      counts.orphansDeleted++;
    }
    return counts;
  }

  /**
   * Seats on workers down for longer than `afterMs` get fresh VMs on other workers with room
   * (their files stay on the lost worker; when it comes back, its VMs of moved seats are
   * orphans the reconcile deletes). Returns how many seats moved.
   */
  async moveSeatsOffDownWorkers(afterMs: number): Promise<number> {
    if (afterMs <= 0) return 0;
    const now = this.o.clock.now();
    let moved = 0;
    for (const worker of await this.o.repo.listWorkers()) {
      if (worker.state !== 'down' || (worker.lastSeenAt ?? 0) > now - afterMs) continue;
      const note = `moved: worker ${worker.id} has not answered for ${Math.round((now - (worker.lastSeenAt ?? 0)) / 1000)} s; a fresh VM is being made`;
      const placed = await this.o.repo.moveSeatsOff(worker.id, this.o.policy, note);
      for (const seat of placed) {
        const workshop = await this.o.repo.getWorkshop(seat.workshopId);
        if (!workshop) continue;
        this.o.log.warn(
          { seat: `${seat.workshopId}/${seat.seatId}`, from: worker.id, to: seat.worker.id },
          'seat moved off a worker that is down',
        );
        this.provisionInBackground(workshop, [seat]);
        moved++;
      }
    }
    return moved;
  }

  /**
   * Recovers seats whose VM should have been made (or started) long ago, as a server that died
   * midway leaves them, and seats nobody has that failed as long ago (a worker answering
   * template_building): failed, they would keep joins out, and a reset would delete the disk of
   * a stopped seat that was starting again. So a start cut short goes back to stopped (the next
   * visit starts it), and any other such seat gets a fresh VM (nothing of a learner's is in a VM
   * never made ready). Returns how many seats it took.
   */
  async failStale(): Promise<number> {
    const stale = await this.o.repo.recoverStaleSeats(this.o.clock.now() - this.o.provisioningTimeoutMs);
    if (stale.stopped > 0) this.o.log.warn({ seats: stale.stopped }, 'seats whose start was cut short are stopped again');
    for (const seat of stale.remade) {
      const workshop = await this.o.repo.getWorkshop(seat.workshopId);
      if (!workshop) continue;
      this.o.log.warn(
        { seat: `${seat.workshopId}/${seat.seatId}`, worker: seat.worker.id },
        'seat VM not made in time; making a fresh one',
      );
      this.track(this.remake(workshop, seat));
    }
    return stale.stopped + stale.remade.length;
  }

  /** Resolves once every seat being made now is ready or failed (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private refuseEnded(workshop: Workshop): void {
    if (workshop.state === 'ended' || workshop.endsAt <= this.o.clock.now()) {
      throw new WorkshopError('workshop_ended', `workshop ${workshop.id} has ended`);
    }
  }

  private async placed(workshopId: string, seatId: number): Promise<PlacedSeat> {
    const placed = await this.o.repo.placedSeat(workshopId, seatId);
    if (!placed) throw new WorkshopError('seat_not_found', `no seat ${seatId} in workshop ${workshopId}`);
    return placed;
  }

  private async seatById(workshopId: string, seatId: number): Promise<Seat> {
    const seat = await this.o.repo.getSeat(workshopId, seatId);
    if (!seat) throw new WorkshopError('seat_not_found', `no seat ${seatId} in workshop ${workshopId}`);
    return seat;
  }

  private seat(learner: Learner): Promise<Seat> {
    return this.seatById(learner.workshopId, learner.seatId);
  }

  /** Makes the seats' VMs in parallel; each seat ends ready or failed (with the agent's reason). */
  private provisionInBackground(workshop: Workshop, seats: readonly PlacedSeat[]): void {
    for (const seat of seats) this.track(this.provision(workshop, seat));
  }

  private track(work: Promise<void>): void {
    const task = work.finally(() => this.inFlight.delete(task));
    this.inFlight.add(task);
  }

  /** Boots a stopped seat's VM again; a worker that lost it makes a fresh one (the files went with it). */
  private async restart(workshop: Workshop, seat: PlacedSeat): Promise<void> {
    const where = `${workshop.id}/${seat.seatId}`;
    try {
      if ((await this.o.workers.startVm(seat.worker, workshop.id, seat.seatId)) === 'missing') {
        this.o.log.warn({ seat: where, worker: seat.worker.id }, 'stopped seat VM lost on its worker; making a fresh one');
        return await this.provision(workshop, seat);
      }
      if (await this.o.repo.setSeatState(workshop.id, seat.seatId, 'ready', null, seat.worker.id)) {
        await this.o.repo.recordActivity(workshop.id, seat.seatId, this.o.clock.now());
        this.o.log.info({ seat: where, worker: seat.worker.id }, 'stopped seat started again');
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.o.log.warn({ seat: where, worker: seat.worker.id, err: message }, 'stopped seat could not start again');
      await this.o.repo
        .setSeatState(workshop.id, seat.seatId, 'failed', `it could not start again: ${message}; reset it`, seat.worker.id)
        .catch(() => undefined);
    }
  }

  /** Deletes whatever VM the worker has of the seat (half made, or made after all), then makes a fresh one. */
  private async remake(workshop: Workshop, seat: PlacedSeat): Promise<void> {
    try {
      await this.o.workers.deleteVm(seat.worker, workshop.id, seat.seatId);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.o.log.warn({ seat: `${workshop.id}/${seat.seatId}`, worker: seat.worker.id, err: message }, 'seat VM could not be made again');
      await this.o.repo.setSeatState(workshop.id, seat.seatId, 'failed', message, seat.worker.id).catch(() => undefined);
      return;
    }
    await this.provision(workshop, seat);
  }

  private async provision(workshop: Workshop, seat: PlacedSeat): Promise<void> {
    try {
      await this.o.workers.createVm(seat.worker, {
        workshopId: workshop.id,
        seatId: seat.seatId,
        vcpus: workshop.vcpus,
        memoryMb: workshop.memoryMb,
        template: workshop.template,
      });
      if (!(await this.o.repo.setSeatState(workshop.id, seat.seatId, 'ready', null, seat.worker.id))) {
        // The workshop ended (or the seat moved to another worker) while the VM was being made: it must not outlive it.
        await this.o.workers.deleteVm(seat.worker, workshop.id, seat.seatId);
        return;
      }
      this.o.onProvisioned?.('ready');
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.o.log.warn({ seat: `${workshop.id}/${seat.seatId}`, worker: seat.worker.id, err: message }, 'seat VM could not be made');
      this.o.onProvisioned?.('failed');
      await this.o.repo.setSeatState(workshop.id, seat.seatId, 'failed', message, seat.worker.id).catch(() => undefined);
    }
  }
}

/** Postgres' unique_violation, from either driver. */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}
