// Seats a server process left half-done when it died (or a worker refused), found on a later
// round once SEAT_READY_TIMEOUT_S (and a minute) has passed: seats nobody has get fresh VMs, so
// joins still find a seat when max_seats = seats, and a stopped seat whose start was cut short
// is stopped again with its VM and disk kept, not failed. Embedded database, one real in-process
// agent (stand-in VMM), a clock the test moves forward; the database written as a crashed server
// leaves it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import { hashPassword } from './passwords.ts';
import { Browser, startTestWorker, type TestWorker } from '../../test/support/workshop-server.ts';

let dir: string;
let server: RunningServer;
let worker: TestWorker;
let offsetMs = 0;
const clock = { now: (): number => Date.now() + offsetMs };
/** Past SEAT_READY_TIMEOUT_S (300 s by default) and the minute the server adds. */
const PAST_READY_TIMEOUT_MS = 400_000;

let teacher: Browser;
let auth: Record<string, string>;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-stale-'));
  worker = await startTestWorker({ capacity: 10, workerId: 'wa' });
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0', JOIN_RATE_LIMIT: '1000' }), {
    log: pino({ level: 'silent' }),
    clock,
    noBackground: true,
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
  teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  assert.equal((await teacher.json('/api/workers', { url: worker.url, token: worker.token, id: 'wa' }, auth)).status, 201);
});
after(async () => {
  await server?.stop();
  await worker?.api.close();
  rmSync(dir, { recursive: true, force: true });
});

interface SeatJson {
  seat_id: number;
  state: string;
  error: string | null;
}

async function createWorkshop(
  name: string,
  seats: number,
  extra: Record<string, unknown> = {},
): Promise<{ id: string; join_code: string }> {
  const created = await teacher.json(
    '/api/workshops',
    { name, seats, memory_mb: 128, ends_at: new Date(clock.now() + 86_400_000).toISOString(), ...extra },
    auth,
  );
  assert.equal(created.status, 201);
  return (await created.json()) as { id: string; join_code: string };
}

async function seatsOf(workshopId: string): Promise<SeatJson[]> {
  return ((await (await teacher.fetch(`/api/workshops/${workshopId}`, { headers: auth })).json()) as { seats: SeatJson[] }).seats;
}

const agentVm = (workshopId: string, seatId: number) =>
  worker.api.manager.list().find((vm) => vm.workshopId === workshopId && vm.seatId === seatId);

test(
  'seats nobody has, left provisioning by a server that died, get fresh VMs: the first learner still gets a seat',
  { timeout: 120_000 },
  async () => {
    // max_seats defaults to seats: no join may make a new one.
    const workshop = await createWorkshop('after a crash', 2);
    await server.service.settled();
    const before = agentVm(workshop.id, 1);
    assert.ok(before);
    // A server making both seats died before it recorded them ready: the records say provisioning
    // (since then), while the worker holds VMs no one will report.
    await server.db.query(`UPDATE seats SET state = 'provisioning', error = NULL, state_since = $2 WHERE workshop_id = $1`, [
      workshop.id,
      clock.now(),
    ]);

    offsetMs += PAST_READY_TIMEOUT_MS;
    await server.tick();
    const ann = await new Browser(server.url).json('/api/join', { code: workshop.join_code, name: 'Ann' });
    assert.equal(ann.status, 201, 'a seat for the first learner, not workshop_full');
    await server.service.settled();
    assert.deepEqual(
      (await seatsOf(workshop.id)).map((s) => s.state),
      ['ready', 'ready'],
    );
    assert.notEqual(agentVm(workshop.id, 1)?.createdAt, before.createdAt, 'the VM left behind was replaced by a fresh one');
    assert.equal(worker.api.manager.list(workshop.id).length, 2);
    // Nothing stale is left: another round changes nothing.
    await server.tick();
    await server.service.settled();
    assert.deepEqual(
      (await seatsOf(workshop.id)).map((s) => s.state),
      ['ready', 'ready'],
    );
  },
);

test('a seat nobody has that failed (the worker refused its VM) is made again later, so joins find it', { timeout: 120_000 }, async () => {
  worker.api.driver.failNext = 'the template is being built';
  const workshop = await createWorkshop('refused once', 1);
  await server.service.settled();
  assert.equal((await seatsOf(workshop.id))[0]?.state, 'failed');

  offsetMs += PAST_READY_TIMEOUT_MS;
  await server.tick();
  const bob = await new Browser(server.url).json('/api/join', { code: workshop.join_code, name: 'Bob' });
  assert.equal(bob.status, 201, 'the seat is handed out, not workshop_full');
  await server.service.settled();
  assert.equal((await seatsOf(workshop.id))[0]?.state, 'ready');
  assert.equal(agentVm(workshop.id, 1)?.status, 'running');
});

test(
  'a stopped seat whose start was cut short by a server that died is stopped again, its VM kept, and starts when its learner comes back',
  {
    timeout: 120_000,
  },
  async () => {
    const workshop = await createWorkshop('cut short', 1, { idle_timeout_s: 600 });
    await server.service.settled();
    const cy = new Browser(server.url);
    assert.equal((await cy.json('/api/join', { code: workshop.join_code, name: 'Cy' })).status, 201);
    offsetMs += 700_000;
    await server.tick();
    assert.equal((await seatsOf(workshop.id))[0]?.state, 'stopped', 'idle past 600 s');
    const before = agentVm(workshop.id, 1);
    assert.equal(before?.status, 'stopped');
    // Cy came back and a server claimed the start as wake does, then died before asking the worker.
    assert.equal(
      await server.service.repo.claimSeatState(workshop.id, 1, 'stopped', 'provisioning', 'starting again after it was stopped while idle'),
      true,
    );

    offsetMs += PAST_READY_TIMEOUT_MS;
    await server.tick();
    await server.service.settled();
    const [seat] = await seatsOf(workshop.id);
    assert.equal(seat?.state, 'stopped', 'not failed: a reset would delete its disk');
    assert.match(seat?.error ?? '', /starts again when its learner comes back/);
    assert.equal(agentVm(workshop.id, 1)?.createdAt, before?.createdAt, 'the same VM, its disk kept');

    // Cy comes back (the join page asks /api/me): the same VM boots again.
    assert.equal(((await (await cy.fetch('/api/me')).json()) as { seat: SeatJson }).seat.state, 'provisioning');
    await server.service.settled();
    assert.equal(((await (await cy.fetch('/api/me')).json()) as { seat: SeatJson }).seat.state, 'ready');
    assert.equal(agentVm(workshop.id, 1)?.status, 'running');
    assert.equal(agentVm(workshop.id, 1)?.createdAt, before?.createdAt, 'booted again, not made afresh');
  },
);
