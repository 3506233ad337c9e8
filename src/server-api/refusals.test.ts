// Refusals and time, on the embedded database with a clock the test moves: every state-changing
// route refuses a cookie session without its CSRF token, malformed JSON, unknown and malformed
// ids with a clear 4xx and changes nothing; a seat left alone past the idle timeout shows idle; a
// workshop past its end time is ended (every VM removed) by the background round; sessions expire.
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
let now = Date.parse('2026-12-03T09:00:00Z');
let teacher: Browser;
let csrf: string;
let workshopId: string;
let joinCode: string;

interface Counts {
  workshops: number;
  seats: number;
  workers: number;
  learners: number;
  audit: number;
}

async function counts(): Promise<Counts> {
  const rows = await server.db.query<Counts>(
    `SELECT (SELECT count(*)::int FROM workshops) AS workshops, (SELECT count(*)::int FROM seats) AS seats,
       (SELECT count(*)::int FROM workers) AS workers, (SELECT count(*)::int FROM learners) AS learners,
       (SELECT count(*)::int FROM audit) AS audit`,
  );
  return rows[0] as Counts;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-refusals-'));
  worker = await startTestWorker({ capacity: 6, workerId: 'wa' });
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0', JOIN_RATE_LIMIT: '1000', SESSION_TTL_S: '43200' }), {
    log: pino({ level: 'silent' }),
    clock: { now: () => now },
    noBackground: true,
  });
  await new SqlWorkshopRepository(server.db).addInstructor('in-1', 't@example.org', await hashPassword('a-long-enough-password'));
  teacher = new Browser(server.url);
  csrf = (
    (await (await teacher.json('/api/login', { email: 't@example.org', password: 'a-long-enough-password' })).json()) as {
      csrf_token: string;
    }
  ).csrf_token;
  assert.equal(
    (await teacher.json('/api/workers', { url: worker.url, token: worker.token, id: 'wa' }, { 'x-csrf-token': csrf })).status,
    201,
  );
  const created = await teacher.json(
    '/api/workshops',
    { name: 'timed', seats: 2, memory_mb: 128, ends_at: new Date(now + 3_600_000).toISOString(), idle_timeout_s: 600 },
    { 'x-csrf-token': csrf },
  );
  const w = (await created.json()) as { id: string; join_code: string };
  workshopId = w.id;
  joinCode = w.join_code;
  await server.service.settled();
});
after(async () => {
  await server?.stop();
  await worker?.api.close();
  rmSync(dir, { recursive: true, force: true });
});

const stateChanging = (): [string, string, unknown][] => [
  ['POST', '/api/workers', { url: 'http://127.0.0.1:7' }],
  ['DELETE', '/api/workers/wa', undefined],
  ['POST', '/api/workshops', { name: 'x', seats: 1, ends_at: new Date(now + 3_600_000).toISOString() }],
  ['POST', `/api/workshops/${workshopId}/seats`, { count: 1 }],
  ['POST', `/api/workshops/${workshopId}/seats/1/reset`, {}],
  ['POST', `/api/workshops/${workshopId}/seats/1/workspace-url`, {}],
  ['POST', `/api/workshops/${workshopId}/end`, {}],
  ['POST', '/api/instructors', { email: 'new@example.org', password: 'another-long-password' }],
  ['POST', '/api/logout', undefined],
];

test('every state-changing route refuses a cookie session without the CSRF token (403), and nothing changes', async () => {
  const before = await counts();
  for (const [method, path, payload] of stateChanging()) {
    const response = await teacher.fetch(path, {
      method,
      ...(payload === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) }),
    });
    assert.equal(response.status, 403, `${method} ${path}`);
    assert.equal(((await response.json()) as { code: string }).code, 'csrf_required');
  }
  assert.deepEqual(await counts(), before);
  assert.equal(worker.api.manager.list(workshopId).length, 2, 'no VM touched');
});

test('malformed JSON, unknown fields, unknown and malformed ids: 4xx with the one error shape, nothing changed', async () => {
  const before = await counts();
  const h = { 'x-csrf-token': csrf, 'content-type': 'application/json' };
  for (const [method, path] of stateChanging().filter(([m, p]) => m === 'POST' && p !== '/api/logout')) {
    const response = await teacher.fetch(path, { method, headers: h, body: '{"count": 1,' });
    assert.equal(response.status, 400, `${method} ${path}`);
    assert.equal(((await response.json()) as { code: string }).code, 'invalid_json');
  }
  const cases: [string, string, unknown, number][] = [
    ['POST', '/api/workshops', { name: 'x', seats: 1, ends_at: new Date(now + 3_600_000).toISOString(), owner: 'me' }, 400],
    ['POST', '/api/workshops', { name: 'x', seats: '1', ends_at: new Date(now + 3_600_000).toISOString() }, 400],
    ['POST', '/api/workshops', [], 400],
    ['POST', `/api/workshops/${workshopId}/seats`, { count: 1.5 }, 400],
    ['POST', '/api/workshops/ws-0000000000/end', {}, 404],
    ['POST', '/api/workshops/ws-0000000000/seats/1/reset', {}, 404],
    ['POST', `/api/workshops/${workshopId}/seats/99/reset`, {}, 404],
    ['POST', `/api/workshops/${workshopId}/seats/0/reset`, {}, 400],
    ['POST', `/api/workshops/${workshopId}/seats/1e3/reset`, {}, 400],
    ['POST', '/api/workshops/WS-UPPER/end', {}, 400],
    ['GET', `/api/workshops/${workshopId}/seats/99/console`, undefined, 404],
    ['GET', `/api/workshops/${workshopId}/seats/1/console?bytes=lots`, undefined, 400],
    ['DELETE', '/api/workers/nope', undefined, 404],
    ['DELETE', '/api/workers/wa', undefined, 409],
    ['DELETE', '/api/workers/..%2F', undefined, 400],
    ['POST', '/api/join', { code: joinCode, name: 'x'.repeat(101) }, 400],
    ['GET', '/w/ws-0000000000/1/', undefined, 404],
    ['GET', '/w/not-a-workshop/1/', undefined, 400],
  ];
  for (const [method, path, payload, status] of cases) {
    const response = await teacher.fetch(path, {
      method,
      headers: payload === undefined ? { 'x-csrf-token': csrf } : h,
      ...(payload === undefined ? {} : { body: JSON.stringify(payload) }),
    });
    assert.equal(response.status, status, `${method} ${path} ${JSON.stringify(payload)}`);
    const answer = (await response.json()) as { error: unknown; code: unknown };
    assert.equal(typeof answer.error, 'string');
    assert.equal(typeof answer.code, 'string');
  }
  assert.deepEqual(await counts(), before, 'nothing changed, no audit line either');
});

test('a NUL or another control character in a name or an email is refused (400 invalid_field), and nothing changes', async () => {
  const before = await counts();
  const h = { 'x-csrf-token': csrf };
  const password = 'a-long-enough-password';
  const cases: [string, unknown][] = [
    ['/api/join', { code: joinCode, name: 'Ann\u0000' }],
    ['/api/join', { code: joinCode, name: 'Ann\u001b[2J' }],
    ['/api/login', { email: 't\u0000@example.org', password }],
    ['/api/setup', { setup_code: 'any-code', email: 'first\u0000@example.org', password }],
    ['/api/instructors', { email: 'new\u0000@example.org', password }],
    ['/api/workshops', { name: 'Lab\u0000', seats: 1, ends_at: new Date(now + 3_600_000).toISOString() }],
    ['/api/workers', { url: 'http://127.0.0.1:7', token: 'a-token-\u0000' }],
  ];
  for (const [path, payload] of cases) {
    const response = await teacher.json(path, payload, h);
    assert.equal(response.status, 400, `${path} ${JSON.stringify(payload)}`);
    assert.equal(((await response.json()) as { code: string }).code, 'invalid_field');
  }
  assert.deepEqual(await counts(), before);
});

test('a seat left alone past the idle timeout shows idle; activity makes it ready again', async () => {
  const learner = new Browser(server.url);
  assert.equal((await learner.json('/api/join', { code: joinCode, name: 'Ann' })).status, 201);
  const seatState = async (): Promise<string | undefined> =>
    (
      (await (await teacher.fetch(`/api/workshops/${workshopId}/seats`)).json()) as { seats: { state: string; learner: unknown }[] }
    ).seats.find((s) => s.learner !== null)?.state;
  assert.equal(await seatState(), 'ready');
  now += 11 * 60_000;
  assert.equal(await seatState(), 'idle');
  const [seat] = await server.db.query<{ seat_id: number }>('SELECT seat_id FROM seats WHERE learner_id IS NOT NULL');
  await server.service.repo.recordActivity(workshopId, seat?.seat_id ?? 0, now);
  assert.equal(await seatState(), 'ready');
});

test('at its end time a workshop is ended by the background round: every VM removed', async () => {
  assert.equal(worker.api.manager.list(workshopId).length, 2);
  now += 3_600_000;
  await server.tick();
  assert.equal(worker.api.manager.list(workshopId).length, 0);
  const shown = (await (await teacher.fetch(`/api/workshops/${workshopId}`)).json()) as { workshop: { state: string } };
  assert.equal(shown.workshop.state, 'ended');
});

test('a session past its lifetime opens nothing', async () => {
  now += 13 * 3_600_000;
  const response = await teacher.fetch('/api/session');
  assert.equal(response.status, 401);
});
