// Who may open a seat's workspace through the server: its learner (learner cookie) or the
// workshop's instructor (session cookie). Both the HTTP proxy and the terminal WebSocket ask here.
import type { PlacedSeat } from '../workshops/model.ts';
import { ApiError } from './errors.ts';
import { SESSION_COOKIE, ServerAuth } from './auth.ts';
import type { ServerContext } from './context.ts';

export interface SeatAccess {
  readonly placed: PlacedSeat;
  /** For logs and the audit trail. */
  readonly actor: string;
}

export async function seatAccess(
  c: ServerContext,
  cookies: Record<string, string | undefined>,
  workshopId: string,
  seatId: number,
): Promise<SeatAccess> {
  let actor: string | undefined;
  let otherSeat = false;
  let notTheirWorkshop = false;
  const learnerToken = ServerAuth.learnerTokenFrom(cookies);
  if (learnerToken !== undefined) {
    const found = await c.service.learnerOf(learnerToken);
    if (found && found.workshop.id === workshopId && found.learner.seatId === seatId) actor = `learner:${found.learner.id}`;
    else if (found) otherSeat = true;
  }
  if (actor === undefined) {
    const instructor = await c.auth.instructorByToken(cookies[SESSION_COOKIE], 'cookie');
    if (instructor) {
      const workshop = await c.repo.getWorkshop(workshopId);
      if (workshop && workshop.instructorId === instructor.instructorId) actor = `instructor:${instructor.email}`;
      else notTheirWorkshop = true;
    }
  }
  if (actor === undefined) {
    if (otherSeat) throw new ApiError(403, 'forbidden', 'this is not your seat');
    // As in the API: another instructor's workshop is not found, not forbidden.
    if (notTheirWorkshop) throw new ApiError(404, 'workshop_not_found', `no workshop ${workshopId}`);
    throw new ApiError(401, 'unauthorized', 'join the workshop first (POST /api/join)');
  }
  const workshop = await c.repo.getWorkshop(workshopId);
  if (!workshop || workshop.state === 'ended') throw new ApiError(410, 'workshop_ended', `workshop ${workshopId} has ended`);
  const placed = await c.repo.placedSeat(workshopId, seatId);
  const seat = await c.repo.getSeat(workshopId, seatId);
  if (!placed || !seat) throw new ApiError(404, 'seat_not_found', `no seat ${seatId} in workshop ${workshopId}`);
  // Opening a stopped seat (the instructor, or a learner's page left open) starts it again.
  await c.service.wake(workshop, seat);
  return { placed, actor };
}

/** Records a seat's activity at most every `intervalMs` per seat (the database need not hear of every keystroke). */
export function activityRecorder(c: ServerContext, intervalMs = 15_000): (workshopId: string, seatId: number) => void {
  const last = new Map<string, number>();
  return (workshopId, seatId) => {
    const key = `${workshopId}/${seatId}`;
    const now = c.clock.now();
    if (now - (last.get(key) ?? 0) < intervalMs) return;
    last.set(key, now);
    c.repo.recordActivity(workshopId, seatId, now).catch(() => last.delete(key));
  };
}
