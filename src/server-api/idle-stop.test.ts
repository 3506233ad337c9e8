// Seats idle past their workshop's timeout are stopped on the server's round (their VM stopped on
// the worker, its disk and address kept) and start again when their learner comes back; a seat
// with an open terminal, or without a learner, is left running. Embedded database, one real
// in-process agent (stand-in VMM), a clock the test moves forward.
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
import { Browser, fakePageDir, startTestWorker, type TestWorker } from '../../test/support/workshop-server.ts';

let dir: string;
let server: RunningServer;
let worker: TestWorker;
let offsetMs = 0;
const clock = { now: (): number => Date.now() + offsetMs };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-idle-'));
  worker = await startTestWorker({ capacity: 10, workerId: 'wa', pageDir: fakePageDir() });
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    clock,
    noBackground: true,
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
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

test('an idle seat is stopped with its VM kept, and its learner coming back starts it again', { timeout: 120_000 }, async () => {
  const teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  assert.equal((await teacher.json('/api/workers', { url: worker.url, token: worker.token, id: 'wa' }, auth)).status, 201);
  const created = await teacher.json(
    '/api/workshops',
    { name: 'lab', seats: 3, memory_mb: 128, idle_timeout_s: 600, ends_at: new Date(Date.now() + 86_400_000).toISOString() },
    auth,
  );
  const workshop = (await created.json()) as { id: string; join_code: string };
  await server.service.settled();
  const seats = async (): Promise<SeatJson[]> =>
    ((await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as { seats: SeatJson[] }).seats;
  const agentVm = (seatId: number) => worker.api.manager.list().find((vm) => vm.workshopId === workshop.id && vm.seatId === seatId);

  const ann = new Browser(server.url);
  const bob = new Browser(server.url);
  assert.equal((await ann.json('/api/join', { code: workshop.join_code, name: 'Ann' })).status, 201);
  assert.equal((await bob.json('/api/join', { code: workshop.join_code, name: 'Bob' })).status, 201);
  // Bob keeps a terminal open: it counts him connected, and the server holding it refreshes his
  // seat's activity while it is open (terminal-activity.test.ts), here at each step of the clock.
  const bobsTerminalRefreshes = (): Promise<void> => server.service.repo.recordActivity(workshop.id, 2, clock.now());
  await server.service.repo.changeConnections(workshop.id, 2, 1, clock.now());
  const annVmBefore = agentVm(1);
  assert.ok(annVmBefore);

  // Not yet past the timeout: nothing stops.
  offsetMs = 500_000;
  await bobsTerminalRefreshes();
  await server.tick();
  assert.deepEqual(
    (await seats()).map((s) => s.state),
    ['ready', 'connected', 'ready'],
  );

  offsetMs = 700_000;
  await bobsTerminalRefreshes();
  await server.tick();
  const afterIdle = await seats();
  assert.deepEqual(
    afterIdle.map((s) => s.state),
    ['stopped', 'connected', 'ready'],
    "Ann's seat idle past 600 s is stopped; Bob's (terminal open) and the untaken seat keep running",
  );
  assert.match(afterIdle[0]?.error ?? '', /idle/);
  assert.equal(agentVm(1)?.status, 'stopped', 'the VM is stopped on the worker, not deleted');
  assert.equal(agentVm(1)?.ip, annVmBefore.ip, 'it keeps its address');
  assert.equal(agentVm(2)?.status, 'running');
  // Another round changes nothing: the seat stays stopped, and the worker's report agrees.
  await server.tick();
  assert.equal((await seats())[0]?.state, 'stopped');

  // Ann comes back (the join page asks /api/me): the seat starts again from the same VM.
  const me = (await (await ann.fetch('/api/me')).json()) as { seat: SeatJson };
  assert.equal(me.seat.seat_id, 1);
  assert.equal(me.seat.state, 'provisioning', 'shown starting at once');
  await server.service.settled();
  const back = (await (await ann.fetch('/api/me')).json()) as { seat: SeatJson };
  assert.equal(back.seat.state, 'ready');
  assert.equal(agentVm(1)?.status, 'running');
  assert.equal(agentVm(1)?.createdAt, annVmBefore.createdAt, 'the same VM, booted again, not a fresh one');
  assert.equal(worker.api.manager.list().filter((vm) => vm.workshopId === workshop.id).length, 3);
  // Fresh activity: the next round does not stop it again at once.
  await server.tick();
  assert.equal((await seats())[0]?.state, 'ready');
});

test(
  'a seat stopped on the worker itself shows stopped; its workspace opened starts it; a stopped seat whose VM is gone gets a fresh one',
  { timeout: 120_000 },
  async () => {
    const teacher = new Browser(server.url);
    const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
    const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
    const created = await teacher.json(
      '/api/workshops',
      { name: 'lab 2', seats: 2, memory_mb: 128, ends_at: new Date(clock.now() + 86_400_000).toISOString() },
      auth,
    );
    const workshop = (await created.json()) as { id: string };
    await server.service.settled();
    const seats = async (): Promise<SeatJson[]> =>
      ((await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as { seats: SeatJson[] }).seats;
    // The workspace is opened as in a browser: by the session cookie.
    const browser = new Browser(server.url);
    assert.equal((await browser.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password' })).status, 200);
    const onAgent = (path: string, method: string): Promise<Response> =>
      fetch(`${worker.url}${path}`, { method, headers: { authorization: `Bearer ${worker.token}` } });

    assert.equal((await onAgent(`/vms/${workshop.id}/1/stop`, 'POST')).status, 200);
    await server.tick();
    assert.equal((await seats())[0]?.state, 'stopped', 'the reconcile reads the worker’s stopped VM');

    // The instructor opens the workspace: the seat starts again.
    assert.equal((await browser.fetch(`/w/${workshop.id}/1/`)).status, 200);
    await server.service.settled();
    assert.equal((await seats())[0]?.state, 'ready');
    assert.equal(worker.api.manager.list().find((vm) => vm.workshopId === workshop.id && vm.seatId === 1)?.status, 'running');

    // Stopped, then lost on the worker: coming back makes a fresh VM rather than a failed seat.
    assert.equal((await onAgent(`/vms/${workshop.id}/2/stop`, 'POST')).status, 200);
    await server.tick();
    assert.equal((await seats())[1]?.state, 'stopped');
    assert.equal((await onAgent(`/vms/${workshop.id}/2`, 'DELETE')).status, 204);
    await server.tick();
    assert.equal((await seats())[1]?.state, 'stopped', 'a stopped seat missing on its worker waits for its learner');
    assert.equal((await browser.fetch(`/w/${workshop.id}/2/`)).status, 200);
    await server.service.settled();
    assert.equal((await seats())[1]?.state, 'ready');
    assert.equal(worker.api.manager.list().find((vm) => vm.workshopId === workshop.id && vm.seatId === 2)?.status, 'running');
  },
);

test(
  'a seat counted connected by a server that died is shown idle and stopped once its activity is old',
  { timeout: 120_000 },
  async () => {
    const teacher = new Browser(server.url);
    const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
    const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
    const created = await teacher.json(
      '/api/workshops',
      { name: 'lab 3', seats: 1, memory_mb: 128, idle_timeout_s: 600, ends_at: new Date(clock.now() + 86_400_000).toISOString() },
      auth,
    );
    const workshop = (await created.json()) as { id: string; join_code: string };
    await server.service.settled();
    const seat = async (): Promise<SeatJson & { connections: number }> =>
      (
        (await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as {
          seats: (SeatJson & { connections: number })[];
        }
      ).seats[0] as SeatJson & { connections: number };
    assert.equal((await new Browser(server.url).json('/api/join', { code: workshop.join_code, name: 'Dee' })).status, 201);
    // Dee had a terminal open through a server process that then died: it never took it off the count.
    await server.db.query('UPDATE seats SET connections = 1 WHERE workshop_id = $1 AND seat_id = 1', [workshop.id]);
    assert.equal((await seat()).state, 'connected');

    offsetMs += 700_000;
    assert.equal((await seat()).state, 'idle', 'no terminal refreshed its activity for 700 s: idle, whatever the count says');
    await server.tick();
    const stopped = await seat();
    assert.equal(stopped.state, 'stopped');
    assert.equal(stopped.connections, 0, 'the count left behind is cleared');
    assert.equal(worker.api.manager.list().find((vm) => vm.workshopId === workshop.id && vm.seatId === 1)?.status, 'stopped');
  },
);
