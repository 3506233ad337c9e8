// A worker that stays down: once SEAT_MOVE_AFTER_S has passed since it last answered, its seats
// get fresh VMs on a worker with room (and not before); the dashboard then shows them there.
// Embedded database, two real in-process agents (stand-in VMM), the server's clock driven here.
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
const workers: TestWorker[] = [];
let now = Date.now();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-move-'));
  for (const id of ['wa', 'wb']) workers.push(await startTestWorker({ capacity: 3, workerId: id }));
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0', WORKER_DOWN_AFTER: '2', SEAT_MOVE_AFTER_S: '300' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
    clock: { now: () => now },
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
});
after(async () => {
  await server?.stop();
  for (const w of workers) await w.api.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('seats of a worker down past SEAT_MOVE_AFTER_S are made again on a worker with room', { timeout: 120_000 }, async () => {
  const teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  for (const [i, w] of workers.entries())
    assert.equal((await teacher.json('/api/workers', { url: w.url, token: w.token, id: ['wa', 'wb'][i] }, auth)).status, 201);
  const created = await teacher.json(
    '/api/workshops',
    { name: 'lab', seats: 2, memory_mb: 128, ends_at: new Date(now + 3_600_000).toISOString() },
    auth,
  );
  const workshop = (await created.json()) as { id: string };
  await server.service.settled();
  const seats = async (): Promise<string[]> =>
    (
      (await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as {
        seats: { worker_id: string; state: string }[];
      }
    ).seats.map((s) => `${s.worker_id}:${s.state}`);
  assert.deepEqual(await seats(), ['wa:ready', 'wb:ready'], 'spread over both');

  const [wa, wb] = workers;
  await wb?.api.app.close();
  now += 20_000;
  await server.tick();
  now += 20_000;
  await server.tick();
  await server.service.settled();
  assert.deepEqual(await seats(), ['wa:ready', 'wb:ready'], 'down for 40 s: the seat waits for its worker');

  now += 300_000;
  await server.tick();
  await server.service.settled();
  assert.deepEqual(await seats(), ['wa:ready', 'wa:ready'], 'down past 300 s: the seat has a fresh VM on wa');
  assert.deepEqual(
    wa?.api.manager
      .list(workshop.id)
      .map((vm) => vm.seatId)
      .sort(),
    [1, 2],
  );
});
