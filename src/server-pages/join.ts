// /join: a learner types the workshop's code and their name and lands in their own workspace.
// Coming back with the learner cookie (or a personal ?rejoin= link) shows the same seat again.
import { api, ApiFailure, byId, say } from './api.ts';

interface LearnerSeat {
  workshop: { id: string; name: string; ends_at: string; state: string };
  seat: { seat_id: number; state: string };
  learner: { id: string; name: string };
  workspace_url: string;
  rejoin_token?: string;
}

const POLL_MS = 1000;
const OPEN_AFTER_MS = 1500;
const form = byId<HTMLFormElement>('join-form');
const errorLine = byId<HTMLParagraphElement>('error');
const seatPanel = byId<HTMLElement>('seat');
const openButton = byId<HTMLButtonElement>('open');

function describe(seat: LearnerSeat, waitedS: number): string {
  if (seat.workshop.state === 'ended') return 'This workshop has ended. Thank you for taking part!';
  switch (seat.seat.state) {
    case 'provisioning':
      return `Preparing your seat… ${waitedS} s`;
    case 'stopped':
      return 'Your seat was stopped while you were away; starting it again…';
    case 'failed':
      return 'Your seat could not be prepared. Ask your instructor to reset it.';
    case 'removed':
      return 'This seat has been removed: the workshop is over.';
    default:
      return 'Your seat is ready. Opening your workspace…';
  }
}

/** Shows the seat, waits while it is being made, then opens the workspace. */
async function follow(first: LearnerSeat): Promise<void> {
  form.hidden = true;
  seatPanel.hidden = false;
  byId('seat-title').textContent = `${first.learner.name}, seat ${first.seat.seat_id} of “${first.workshop.name}”`;
  if (first.rejoin_token !== undefined) {
    const link = new URL(`join?rejoin=${encodeURIComponent(first.rejoin_token)}`, location.href).toString();
    const anchor = byId<HTMLAnchorElement>('rejoin-link');
    anchor.href = link;
    anchor.textContent = link;
    byId('rejoin').hidden = false;
  }
  const started = Date.now();
  let seat = first;
  for (;;) {
    byId('seat-state').textContent = describe(seat, Math.round((Date.now() - started) / 1000));
    byId('seat').dataset['state'] = seat.seat.state;
    if (seat.workshop.state === 'ended' || seat.seat.state === 'failed' || seat.seat.state === 'removed') return;
    if (seat.seat.state !== 'provisioning' && seat.seat.state !== 'stopped') break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      seat = await api<LearnerSeat>('GET', '/api/me');
    } catch (error) {
      say(errorLine, (error as Error).message);
    }
  }
  const workspace = new URL(seat.workspace_url, location.href).toString();
  openButton.disabled = false;
  openButton.onclick = () => location.assign(workspace);
  // The learner gets a moment to keep their personal link before the workspace opens.
  setTimeout(() => location.assign(workspace), first.rejoin_token === undefined ? 0 : OPEN_AFTER_MS);
}

/** The API's message, except where it speaks to operators rather than to a learner. */
function forLearner(error: unknown): string {
  if (error instanceof ApiFailure && error.code === 'no_capacity')
    return 'There is no room for another seat right now: ask your instructor.';
  return (error as Error).message;
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const code = byId<HTMLInputElement>('code').value.trim();
  const name = byId<HTMLInputElement>('name').value.trim();
  if (code === '' || name === '') return say(errorLine, 'Type the workshop code and your name.');
  say(errorLine, '');
  const button = byId<HTMLButtonElement>('join');
  button.disabled = true;
  api<LearnerSeat>('POST', '/api/join', { code, name })
    .then(follow)
    .catch((error: unknown) => say(errorLine, forLearner(error)))
    .finally(() => (button.disabled = false));
});

async function start(): Promise<void> {
  const query = new URLSearchParams(location.search);
  byId<HTMLInputElement>('code').value = query.get('code') ?? '';
  const rejoin = query.get('rejoin');
  try {
    if (rejoin !== null) return await follow(await api<LearnerSeat>('POST', '/api/rejoin', { token: rejoin }));
    return await follow(await api<LearnerSeat>('GET', '/api/me'));
  } catch (error) {
    // Not joined yet: the form it is. Anything else is worth saying.
    if (!(error instanceof ApiFailure && error.status === 401)) say(errorLine, (error as Error).message);
  }
}

void start();
