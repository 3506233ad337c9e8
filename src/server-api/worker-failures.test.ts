// A seat's worker that fails the server: one whose agent has no VM for the seat, refuses, is gone,
// or accepts connections and never answers. The instructor gets a clear answer (404, 502)
// and a failed reset leaves the seat as it was; a hung worker is marked down within the call's
// timeout, and the background rounds wait for each other instead of piling up behind it.
// Embedded database, a real in-process agent (stand-in VMM), a stand-in agent that never answers.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import { AgentWorkers } from '../server-workers/agent-workers.ts';
import { DEFAULT_AGENT_TIMEOUTS } from '../agent-client/client.ts';
import { hashPassword } from './passwords.ts';
import { Browser, startSilentAgent, startTestWorker, type SilentAgent, type TestWorker } from '../../test/support/workshop-server.ts';

let dir: string;
let server: RunningServer;
let worker: TestWorker;
let workerClosed = false;
let silent: SilentAgent;
let teacher: Browser;
let auth: Record<string, string>;
let workshopId: string;

/** Short enough that a test against a hung agent is quick, long enough for an in-process agent. */
const QUICK_MS = 2000;

interface SeatJson {
  seat_id: number;
  state: string;
  error: string | null;
}

interface ErrorJson {
  error: string;
  code: string;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-worker-failures-'));
  worker = await startTestWorker({ capacity: 4, workerId: 'wa' });
  silent = await startSilentAgent();
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
    workers: new AgentWorkers({ readyTimeoutS: 30, timeouts: { ...DEFAULT_AGENT_TIMEOUTS, quickMs: QUICK_MS } }),
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
  teacher = new Browser(server.url);
  const login = await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password', bearer: true });
  auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
  assert.equal((await teacher.json('/api/workers', { url: worker.url, token: worker.token, id: 'wa' }, auth)).status, 201);
  const created = await teacher.json(
    '/api/workshops',
    { name: 'lab', seats: 2, memory_mb: 128, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
    auth,
  );
  workshopId = ((await created.json()) as { id: string }).id;
  await server.service.settled();
});
after(async () => {
  await server?.stop();
  if (!workerClosed) await worker?.api.close();
  await silent?.close();
  rmSync(dir, { recursive: true, force: true });
});

const seat = async (seatId: number): Promise<SeatJson | undefined> =>
  ((await (await teacher.fetch(`/api/workshops/${workshopId}`, { headers: auth })).json()) as { seats: SeatJson[] }).seats.find(
    (s) => s.seat_id === seatId,
  );
const reset = (seatId: number): Promise<Response> => teacher.json(`/api/workshops/${workshopId}/seats/${seatId}/reset`, {}, auth);
const consoleOf = (seatId: number): Promise<Response> =>
  teacher.fetch(`/api/workshops/${workshopId}/seats/${seatId}/console`, { headers: auth });

test('the console of a seat whose VM is not on its worker is 404 vm_not_found', { timeout: 60_000 }, async () => {
  await worker.api.manager.delete(workshopId, 2);
  const answer = await consoleOf(2);
  assert.equal(answer.status, 404);
  assert.equal(((await answer.json()) as ErrorJson).code, 'vm_not_found');
});

test(
  "a reset the worker fails is 502 worker_error with the agent's reason, and the seat stays as it was",
  { timeout: 60_000 },
  async () => {
    assert.equal((await seat(1))?.state, 'ready');
    worker.api.network.failNextDetach = 'the TAP would not let go';
    const answer = await reset(1);
    assert.equal(answer.status, 502);
    const error = (await answer.json()) as ErrorJson;
    assert.equal(error.code, 'worker_error');
    assert.match(error.error, /the TAP would not let go/);
    await server.service.settled();
    assert.equal((await seat(1))?.state, 'ready', 'not left provisioning');
    assert.equal((await seat(1))?.error, null);
  },
);

test('a hung worker (it accepts connections, never answers) is marked down within the call timeout', { timeout: 60_000 }, async () => {
  const added = await teacher.json('/api/workers', { url: silent.url, id: 'hung' }, auth);
  assert.equal(added.status, 201);
  const shown = (await added.json()) as { state: string; last_error: string | null };
  assert.equal(shown.state, 'down');
  assert.match(shown.last_error ?? '', /hung is unreachable.*no answer within 2 s/);
  assert.deepEqual(silent.requests, ['GET /health']);
  assert.equal((await teacher.fetch('/api/workers/hung', { method: 'DELETE', headers: auth })).status, 204);
});

test(
  'reset and console with the worker gone are 502 worker_unreachable naming it; the seat stays as it was',
  { timeout: 60_000 },
  async () => {
    const before = await seat(1);
    assert.equal(before?.state, 'ready');
    await worker.api.close();
    workerClosed = true;
    for (const answer of [await reset(1), await consoleOf(1)]) {
      assert.equal(answer.status, 502);
      const error = (await answer.json()) as ErrorJson;
      assert.equal(error.code, 'worker_unreachable');
      assert.match(error.error, /worker wa is unreachable/);
    }
    await server.service.settled();
    assert.deepEqual(await seat(1), before, 'not left provisioning');
  },
);

test('background rounds never overlap: ticks while a round waits on a hung worker are skipped', { timeout: 60_000 }, async (t) => {
  const hung = await startSilentAgent();
  const dataDir = join(dir, 'rounds');
  const config = loadServerConfig({ DATA_DIR: dataDir, PORT: '0', WORKER_POLL_S: '1' });
  // The worker is in the records before the background starts: its first round polls it.
  const first = await startServer(config, { log: pino({ level: 'silent' }), noBackground: true });
  await new SqlWorkshopRepository(first.db).addWorker({ id: 'hung', url: hung.url, token: null, memoryMb: null });
  await first.stop();
  t.mock.timers.enable({ apis: ['setInterval'] });
  const rounds = await startServer(config, {
    log: pino({ level: 'silent' }),
    // Long: the round is held until the test lets the agent answer.
    workers: new AgentWorkers({ readyTimeoutS: 30, timeouts: { ...DEFAULT_AGENT_TIMEOUTS, quickMs: 60_000 } }),
  });
  try {
    await hung.arrived(1);
    for (let i = 0; i < 3; i++) t.mock.timers.tick(1000);
    hung.answer(503, 'busy');
  } finally {
    await rounds.stop();
    await hung.close();
  }
  assert.deepEqual(hung.requests, ['GET /health'], 'one round polled it; the ticks meanwhile started none');
});
