// 20 learners join one workshop at the same moment (embedded database, one server process, two
// real in-process agents of 10 seats each, a third that stopped answering): 20 distinct seats,
// none twice, no worker over capacity, none on the worker that is down, and every seat's VM made.
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
import { Browser, joinStorm, startTestWorker, type TestWorker } from '../../test/support/workshop-server.ts';

let dir: string;
let server: RunningServer;
const workers: TestWorker[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-storm-'));
  for (const id of ['wa', 'wb', 'wc']) workers.push(await startTestWorker({ capacity: 10, workerId: id }));
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0', JOIN_RATE_LIMIT: '1000', WORKER_DOWN_AFTER: '2' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
});
after(async () => {
  await server?.stop();
  for (const w of workers) await w.api.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('20 concurrent joins: 20 distinct seats, no worker over capacity, none on a worker that is down', { timeout: 120_000 }, async () => {
  const teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  for (const [i, w] of workers.entries()) {
    assert.equal((await teacher.json('/api/workers', { url: w.url, token: w.token, id: ['wa', 'wb', 'wc'][i] }, auth)).status, 201);
  }
  // The third worker stops answering: two failed polls and it is down.
  const [, , stopped] = workers;
  await stopped?.api.app.close();
  await server.tick();
  await server.tick();
  const states = ((await (await teacher.fetch('/api/workers', { headers: auth })).json()) as { workers: { id: string; state: string }[] })
    .workers;
  assert.deepEqual(
    states.map((s) => [s.id, s.state]),
    [
      ['wa', 'up'],
      ['wb', 'up'],
      ['wc', 'down'],
    ],
  );

  const created = await teacher.json(
    '/api/workshops',
    { name: 'storm', seats: 5, max_seats: 20, memory_mb: 128, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
    auth,
  );
  assert.equal(created.status, 201);
  const workshop = (await created.json()) as { id: string; join_code: string };
  const joins = await joinStorm([server.url], workshop.join_code, 20);
  assert.deepEqual(
    joins.map((j) => j.status),
    Array(20).fill(201),
  );
  const seats = joins.map((j) => j.seatId ?? 0).sort((a, b) => a - b);
  assert.deepEqual(
    seats,
    Array.from({ length: 20 }, (_, i) => i + 1),
    'each seat once',
  );
  assert.equal((await new Browser(server.url).json('/api/join', { code: workshop.join_code, name: 'one too many' })).status, 409);

  await server.service.settled();
  const shown = (await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as {
    seats: { seat_id: number; state: string; worker_id: string }[];
  };
  assert.ok(
    shown.seats.every((s) => s.state === 'ready'),
    JSON.stringify(shown.seats.filter((s) => s.state !== 'ready')),
  );
  const [a, b] = workers;
  assert.equal(a?.api.manager.list(workshop.id).length, 10, 'worker a full, not over');
  assert.equal(b?.api.manager.list(workshop.id).length, 10, 'worker b full, not over');
  assert.equal(stopped?.api.manager.list(workshop.id).length, 0, 'nothing on the worker that is down');
});
