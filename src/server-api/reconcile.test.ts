// A worker whose VMs changed behind the server's back (its agent lost some in a crash, or holds
// some no seat wants any more) is brought back in line on the server's next round: a ready seat
// whose VM is gone gets a fresh one, a VM of this server's workshop that no seat owns is deleted,
// a VM of a workshop the server does not know is left alone. Embedded database, one real
// in-process agent (stand-in VMM).
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

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-reconcile-'));
  worker = await startTestWorker({ capacity: 10, workerId: 'wa' });
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
});
after(async () => {
  await server?.stop();
  await worker?.api.close();
  rmSync(dir, { recursive: true, force: true });
});

const onAgent = (path: string, init: RequestInit = {}): Promise<Response> =>
  fetch(`${worker.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${worker.token}`, 'content-type': 'application/json', ...(init.headers as Record<string, string>) },
  });

test('lost VMs are made again, orphans of this server deleted, other VMs left alone', { timeout: 120_000 }, async () => {
  const teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  assert.equal((await teacher.json('/api/workers', { url: worker.url, token: worker.token, id: 'wa' }, auth)).status, 201);
  const created = await teacher.json(
    '/api/workshops',
    { name: 'lab', seats: 2, memory_mb: 128, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
    auth,
  );
  const workshop = (await created.json()) as { id: string };
  await server.service.settled();
  const seatStates = async (): Promise<string[]> =>
    ((await (await teacher.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as { seats: { state: string }[] }).seats.map(
      (s) => s.state,
    );
  assert.deepEqual(await seatStates(), ['ready', 'ready']);

  // Behind the server's back: seat 1's VM is gone, a VM for a seat 7 that does not exist appears,
  // and someone else's VM sits on the same worker.
  assert.equal((await onAgent(`/vms/${workshop.id}/1`, { method: 'DELETE' })).status, 204);
  const stray = { workshop_id: workshop.id, seat_id: 7, memory_mb: 128 };
  assert.equal((await onAgent('/vms', { method: 'POST', body: JSON.stringify(stray) })).status, 201);
  const foreign = { workshop_id: 'hands-off', seat_id: 1, memory_mb: 128 };
  assert.equal((await onAgent('/vms', { method: 'POST', body: JSON.stringify(foreign) })).status, 201);

  await server.tick();
  await server.service.settled();
  assert.deepEqual(await seatStates(), ['ready', 'ready']);
  const vms = worker.api.manager
    .list()
    .map((vm) => `${vm.workshopId}/${vm.seatId}`)
    .sort();
  assert.deepEqual(vms, [`${workshop.id}/1`, `${workshop.id}/2`, 'hands-off/1'].sort());

  // Nothing left to do: another round changes nothing.
  await server.tick();
  assert.deepEqual(await seatStates(), ['ready', 'ready']);
  assert.equal(worker.api.manager.list().length, 3);
});
