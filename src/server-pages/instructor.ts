// The instructor's page: on a fresh server the first account's sign-up (with the setup code of the
// URL the server logged), else log in; list and create workshops, and a workshop's dashboard that
// updates live (who sits where, on which worker, in which state, when they last did something),
// with a learner's workspace, a seat's console, reset, add seats and end.
import { ago, api, ApiFailure, byId, el, say, useCsrf } from './api.ts';

interface Session {
  email: string;
  csrf_token: string;
}
interface Workshop {
  id: string;
  name: string;
  seats: number;
  max_seats: number;
  join_code: string;
  state: string;
  ends_at: string;
  template: string;
  memory_mb: number;
}
interface Seat {
  seat_id: number;
  state: string;
  worker_id: string | null;
  learner: { id: string; name: string } | null;
  last_activity_at: string | null;
  error: string | null;
}

const REFRESH_MS = 2000;
/** The server's rule for new passwords (src/server-api/passwords.ts): the pages import nothing of the server. */
const MIN_PASSWORD_LENGTH = 10;
const EMAIL = /^[^\s@]+@[^\s@]+$/;
const errorLine = byId<HTMLParagraphElement>('error');
let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let openWorkshop: string | undefined;

/** The code of the sign-up URL the server logged, taken out of the address bar at once so that no history keeps it. */
const setupCodeFromUrl = ((): string => {
  const url = new URL(location.href);
  const code = url.searchParams.get('setup');
  if (code === null) return '';
  url.searchParams.delete('setup');
  history.replaceState(history.state, '', `${url.pathname}${url.search}${url.hash}`);
  return code.trim();
})();

const report = (error: unknown): void => {
  if (error instanceof ApiFailure && error.status === 401) return showLogin();
  say(errorLine, (error as Error).message);
};

function show(section: 'login-form' | 'setup-form' | 'workshops' | 'workshop'): void {
  for (const id of ['login-form', 'setup-form', 'workshops', 'workshop'] as const) byId(id).hidden = id !== section;
  if (section !== 'workshop') openWorkshop = undefined;
  clearTimeout(refreshTimer);
}

function showLogin(): void {
  useCsrf('');
  byId('who').textContent = '';
  byId('logout').hidden = true;
  show('login-form');
}

function showSetup(): void {
  useCsrf('');
  byId('who').textContent = '';
  byId('logout').hidden = true;
  show('setup-form');
  const code = byId<HTMLInputElement>('setup-code');
  if (code.value === '') code.value = setupCodeFromUrl;
  byId<HTMLInputElement>(code.value === '' ? 'setup-code' : 'setup-email').focus();
}

/** Not logged in: the sign-up while the server has no instructor, else the login form. */
async function showSignUpOrLogin(): Promise<void> {
  try {
    const { needed } = await api<{ needed: boolean }>('GET', '/api/setup');
    if (needed) return showSetup();
  } catch (error) {
    say(errorLine, (error as Error).message);
  }
  showLogin();
}

function signedIn(session: Session): void {
  useCsrf(session.csrf_token);
  byId('who').textContent = session.email;
  byId('logout').hidden = false;
  void showWorkshops();
}

async function showWorkshops(): Promise<void> {
  show('workshops');
  const { workshops } = await api<{ workshops: Workshop[] }>('GET', '/api/workshops');
  const rows = workshops.map((w) =>
    el(
      'tr',
      { 'data-workshop': w.id },
      el('td', {}, w.name),
      el('td', { class: 'code' }, w.join_code),
      el('td', {}, String(w.seats)),
      el('td', {}, w.state),
      el('td', {}, new Date(w.ends_at).toLocaleString()),
      el('td', {}, el('button', { type: 'button', onclick: () => void showWorkshop(w.id).catch(report) }, 'Open')),
    ),
  );
  byId('workshop-rows').replaceChildren(...rows);
}

async function showWorkshop(id: string): Promise<void> {
  show('workshop');
  openWorkshop = id;
  byId('console').hidden = true;
  byId('ws-ended').textContent = '';
  await refreshWorkshop();
}

/** One round of the live dashboard; the next is scheduled while the workshop stays open. */
async function refreshWorkshop(): Promise<void> {
  const id = openWorkshop;
  if (id === undefined) return;
  try {
    const { workshop, seats } = await api<{ workshop: Workshop; seats: Seat[] }>('GET', `/api/workshops/${encodeURIComponent(id)}`);
    if (openWorkshop !== id) return;
    renderWorkshop(workshop, seats);
    say(errorLine, '');
  } catch (error) {
    report(error);
  }
  clearTimeout(refreshTimer);
  if (openWorkshop === id) refreshTimer = setTimeout(() => void refreshWorkshop(), REFRESH_MS);
}

function renderWorkshop(w: Workshop, seats: Seat[]): void {
  byId('ws-title').textContent = w.name;
  byId('ws-code').textContent = w.join_code;
  const joinLink = new URL(`join?code=${encodeURIComponent(w.join_code)}`, location.href).toString();
  const anchor = byId<HTMLAnchorElement>('ws-join-link');
  anchor.href = joinLink;
  anchor.textContent = joinLink;
  const taken = seats.filter((s) => s.learner !== null).length;
  byId('ws-meta').textContent =
    `${w.state} · ${taken} of ${seats.length} seats taken (at most ${w.max_seats}) · ${w.template}, ${w.memory_mb} MiB · ends ${new Date(w.ends_at).toLocaleString()}`;
  const active = w.state === 'active';
  byId<HTMLButtonElement>('end').disabled = !active;
  byId<HTMLButtonElement>('add-seats').disabled = !active;
  const now = Date.now();
  byId('seat-rows').replaceChildren(
    ...seats.map((s) =>
      el(
        'tr',
        { 'data-seat': s.seat_id, 'data-state': s.state },
        el('td', {}, String(s.seat_id)),
        el('td', { class: 'learner' }, s.learner?.name ?? '—'),
        el('td', {}, s.worker_id ?? '—'),
        el('td', { class: 'state', title: s.error ?? '' }, s.state),
        el('td', {}, ago(s.last_activity_at, now)),
        el(
          'td',
          { class: 'actions' },
          el(
            'button',
            { type: 'button', class: 'open-workspace', disabled: !active, onclick: () => void openSeat(w.id, s.seat_id) },
            'Workspace',
          ),
          el('button', { type: 'button', class: 'read-console', onclick: () => void readConsole(w.id, s.seat_id) }, 'Console'),
          el('button', { type: 'button', class: 'reset', disabled: !active, onclick: () => void resetSeat(w.id, s) }, 'Reset'),
        ),
      ),
    ),
  );
}

const seatPath = (workshopId: string, seatId: number, rest: string): string =>
  `/api/workshops/${encodeURIComponent(workshopId)}/seats/${seatId}/${rest}`;

async function openSeat(workshopId: string, seatId: number): Promise<void> {
  // The tab is opened now, inside the click, so that no pop-up blocker stands in the way.
  const tab = window.open('about:blank', '_blank');
  try {
    const { workspace_url } = await api<{ workspace_url: string }>('POST', seatPath(workshopId, seatId, 'workspace-url'));
    const url = new URL(workspace_url, location.href).toString();
    if (tab) tab.location.href = url;
    else location.assign(url);
  } catch (error) {
    tab?.close();
    report(error);
  }
}

async function readConsole(workshopId: string, seatId: number): Promise<void> {
  try {
    const text = await api<string>('GET', `${seatPath(workshopId, seatId, 'console')}?bytes=16384`);
    byId('console-title').textContent = `Seat ${seatId}: console`;
    byId('console-text').textContent = typeof text === 'string' ? text : JSON.stringify(text);
    byId('console').hidden = false;
  } catch (error) {
    report(error);
  }
}

async function resetSeat(workshopId: string, seat: Seat): Promise<void> {
  const who = seat.learner ? `${seat.learner.name}'s seat` : `seat ${seat.seat_id}`;
  if (!window.confirm(`Reset ${who}? Its VM is replaced by a fresh one: every file in it is lost.`)) return;
  try {
    await api('POST', seatPath(workshopId, seat.seat_id, 'reset'));
    await refreshWorkshop();
  } catch (error) {
    report(error);
  }
}

byId<HTMLFormElement>('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const email = byId<HTMLInputElement>('email').value.trim();
  const password = byId<HTMLInputElement>('password').value;
  if (email === '' || password === '') return say(errorLine, 'Type your email and password.');
  say(errorLine, '');
  api<Session>('POST', '/api/login', { email, password })
    .then(signedIn)
    .catch((error: unknown) => say(errorLine, (error as Error).message));
});

/** The API's refusal of a sign-up, in words. */
function signUpRefusal(error: unknown): string {
  if (!(error instanceof ApiFailure)) return (error as Error).message;
  if (error.code === 'invalid_setup_code')
    return "This setup code is not valid. Copy it again from the server's log, from the line that starts with “no instructor account yet”.";
  if (error.code === 'rate_limited') return `Too many attempts: ${error.message}.`;
  if (error.status === 400 && /email/.test(error.message)) return 'Type a whole email address, like name@example.org.';
  if (error.status === 400 && /password/.test(error.message)) return `The password needs ${MIN_PASSWORD_LENGTH} characters or more.`;
  return error.message;
}

byId<HTMLFormElement>('setup-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = (id: string): string => byId<HTMLInputElement>(id).value;
  const setupCode = value('setup-code').trim();
  const email = value('setup-email').trim();
  const password = value('setup-password');
  if (setupCode === '') return say(errorLine, "Paste the setup code from the server's log.");
  if (!EMAIL.test(email)) return say(errorLine, 'Type a whole email address, like name@example.org.');
  if (password.length < MIN_PASSWORD_LENGTH) return say(errorLine, `The password needs ${MIN_PASSWORD_LENGTH} characters or more.`);
  if (password !== value('setup-password-again'))
    return say(errorLine, 'The two passwords do not match: type the same password in both fields.');
  say(errorLine, '');
  const button = byId<HTMLButtonElement>('setup');
  button.disabled = true;
  api<Session>('POST', '/api/setup', { setup_code: setupCode, email, password })
    .then(signedIn)
    .catch((error: unknown) => {
      // Someone made the first account meanwhile (or `clarateach instructor add`): only logging in is left.
      if (error instanceof ApiFailure && error.code === 'already_set_up') {
        showLogin();
        byId<HTMLInputElement>('email').value = email;
        return say(errorLine, 'This server has an instructor account already: log in.');
      }
      say(errorLine, signUpRefusal(error));
    })
    .finally(() => (button.disabled = false));
});

byId<HTMLFormElement>('create-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const number = (id: string): number => Number(byId<HTMLInputElement>(id).value);
  const name = byId<HTMLInputElement>('ws-name').value.trim();
  const hours = number('ws-hours');
  if (name === '') return say(errorLine, 'Give the workshop a name.');
  if (!(hours > 0)) return say(errorLine, 'The length must be more than 0 hours.');
  const maxSeats = byId<HTMLInputElement>('ws-max-seats').value;
  api<Workshop>('POST', '/api/workshops', {
    name,
    seats: number('ws-seats'),
    ...(maxSeats === '' ? {} : { max_seats: Number(maxSeats) }),
    memory_mb: number('ws-memory'),
    template: byId<HTMLInputElement>('ws-template').value.trim(),
    ends_at: new Date(Date.now() + hours * 3_600_000).toISOString(),
  })
    .then((created) => showWorkshop(created.id))
    .catch(report);
});

byId('add-seats').addEventListener('click', () => {
  const id = openWorkshop;
  if (id === undefined) return;
  api('POST', `/api/workshops/${encodeURIComponent(id)}/seats`, { count: Number(byId<HTMLInputElement>('add-count').value) })
    .then(refreshWorkshop)
    .catch(report);
});

byId('end').addEventListener('click', () => {
  const id = openWorkshop;
  if (id === undefined) return;
  if (!window.confirm('End this workshop? Every seat and its files are removed.')) return;
  const button = byId<HTMLButtonElement>('end');
  button.disabled = true;
  button.textContent = 'Ending… (removing every VM)';
  api<{ removed: number; failed: number }>('POST', `/api/workshops/${encodeURIComponent(id)}/end`)
    .then((result) => {
      say(errorLine, result.failed > 0 ? `${result.failed} VMs could not be removed; the server's log says why.` : '');
      byId('ws-ended').textContent = `Ended: ${result.removed} VMs removed.`;
      return refreshWorkshop();
    })
    .catch(report)
    .finally(() => (button.textContent = 'End workshop'));
});

byId('back').addEventListener('click', () => void showWorkshops().catch(report));
byId('console-close').addEventListener('click', () => (byId('console').hidden = true));
byId('logout').addEventListener('click', () => void api('POST', '/api/logout').then(showLogin, report));

api<Session>('GET', '/api/session').then(signedIn, (error: unknown) => {
  if (error instanceof ApiFailure && error.status === 401) void showSignUpOrLogin();
  else report(error);
});
