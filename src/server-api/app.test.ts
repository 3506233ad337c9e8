// The workshop server end to end in one process: embedded database (PGlite in a temp dir), a real
// agent (in-process, stand-in VMM, loopback addresses) as its worker, whose seat 1 runs the real
// guest file and terminal servers. Instructor login and CSRF, workers, workshops and seats, joins
// and rejoins, the workspace page, files and terminal through the server, console, reset, add
// seats, end; and every bad input a clear 4xx that changes nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import { hashPassword } from './passwords.ts';
import { startFilesServer } from '../guest/files/server.ts';
import { startTerminalServer } from '../guest/terminal/server.ts';
import { silentLogger } from '../guest/shared/log.ts';
import { GUEST_PORTS } from '../guest/contract.ts';
import { Browser, fakePageDir, startTestWorker, type TestWorker } from '../../test/support/workshop-server.ts';
import { TerminalClient } from '../../test/support/terminal-client.ts';

const PASSWORD = 'a-long-enough-password';

async function body<T>(response: Response): Promise<T> {
  return (await response.json()) as T;
}

interface JoinAnswer {
  seat: { seat_id: number; state: string };
  workspace_url: string;
  rejoin_token?: string;
  workshop: { id: string };
}

describe('the workshop server (embedded database, one process)', { timeout: 180_000 }, () => {
  let dir: string;
  let server: RunningServer;
  let worker: TestWorker;
  let teacher: Browser;
  let csrf: string;
  let workshopId: string;
  let joinCode: string;
  let learner: Browser;
  let learnerSeat: number;
  let workspace: string;
  const closers: { close(): Promise<void> }[] = [];

  const start = async (extra: Record<string, string> = {}): Promise<RunningServer> =>
    startServer(
      loadServerConfig({ DATA_DIR: join(dir, `db-${Object.keys(extra).length}`), PORT: '0', JOIN_RATE_LIMIT: '1000', ...extra }),
      {
        log: pino({ level: 'silent' }),
        noBackground: true,
      },
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ct-server-'));
    worker = await startTestWorker({ capacity: 4, workerId: 'wa', pageDir: fakePageDir() });
    server = await start();
    await new SqlWorkshopRepository(server.db).addInstructor('in-1', 'teacher@example.org', await hashPassword(PASSWORD));
    await new SqlWorkshopRepository(server.db).addInstructor('in-2', 'other@example.org', await hashPassword(PASSWORD));
    teacher = new Browser(server.url);
    learner = new Browser(server.url);
    workspace = mkdtempSync(join(tmpdir(), 'ct-server-ws-'));
    const ip = `${worker.subnet}.11`;
    closers.push(
      await startFilesServer({
        config: { host: ip, port: GUEST_PORTS.files, workspaceDir: workspace, maxUploadBytes: 1 << 20 },
        logger: silentLogger,
      }),
      await startTerminalServer({
        config: {
          host: ip,
          port: GUEST_PORTS.terminal,
          workspaceDir: workspace,
          shell: '/bin/bash',
          detachedTtlS: 60,
          scrollbackBytes: 65536,
        },
        logger: silentLogger,
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: workspace, LANG: 'C.UTF-8' },
      }),
    );
  });
  after(async () => {
    for (const c of closers) await c.close();
    await server?.stop();
    await worker?.api.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(workspace, { recursive: true, force: true });
  });

  const mutate = (path: string, payload: unknown, method = 'POST'): Promise<Response> =>
    teacher.json(path, payload, { 'x-csrf-token': csrf }, method);

  test('login: wrong password, malformed JSON and unknown fields are refused; the session cookie is HttpOnly and SameSite=Strict', async () => {
    const wrong = await teacher.json('/api/login', { email: 'teacher@example.org', password: 'nope' });
    assert.equal(wrong.status, 401);
    assert.equal((await body<{ code: string }>(wrong)).code, 'invalid_credentials');
    const unknown = await teacher.json('/api/login', { email: 'nobody@example.org', password: PASSWORD });
    assert.equal(unknown.status, 401);
    const malformed = await teacher.fetch('/api/login', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"email":',
    });
    assert.equal(malformed.status, 400);
    assert.equal((await body<{ code: string }>(malformed)).code, 'invalid_json');
    assert.equal((await teacher.json('/api/login', { email: 'teacher@example.org', password: PASSWORD, admin: true })).status, 400);
    assert.equal(teacher.cookies.size, 0, 'no cookie from a refusal');
    const ok = await teacher.json('/api/login', { email: 'Teacher@Example.org', password: PASSWORD });
    assert.equal(ok.status, 200);
    const setCookie = ok.headers.getSetCookie().join('\n');
    assert.match(setCookie, /ct_session=[\w-]+;.*HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.doesNotMatch(setCookie, /Secure/, 'plain http: not Secure (SECURE_COOKIES=auto)');
    const session = await body<{ csrf_token: string; session_token?: string }>(ok);
    assert.equal(session.session_token, undefined, 'the token is only in the cookie unless asked for');
    csrf = session.csrf_token;
    assert.equal((await body<{ email: string }>(await teacher.fetch('/api/session'))).email, 'teacher@example.org');
    assert.equal((await new Browser(server.url).fetch('/api/session')).status, 401);
    const forged = new Browser(server.url);
    forged.cookies.set('ct_session', 'forged-session-token');
    assert.equal((await forged.fetch('/api/workshops')).status, 401);
  });

  test('a cookie session changing state without its CSRF token is refused, and nothing changes', async () => {
    const missing = await teacher.json('/api/workers', { url: worker.url, token: worker.token });
    assert.equal(missing.status, 403);
    assert.equal((await body<{ code: string }>(missing)).code, 'csrf_required');
    const wrong = await teacher.json('/api/workers', { url: worker.url, token: worker.token }, { 'x-csrf-token': 'guessed' });
    assert.equal((await body<{ code: string }>(wrong)).code, 'csrf_invalid');
    assert.deepEqual((await body<{ workers: unknown[] }>(await teacher.fetch('/api/workers'))).workers, []);
  });

  test('workers: added and polled at once (up, capacity from the agent); bad URLs refused; the token never shown', async () => {
    for (const url of ['ftp://x', 'http://127.0.0.1:1/path', 'http://user:pw@127.0.0.1:1', 'not a url']) {
      const refused = await mutate('/api/workers', { url: url.length < 8 ? `${url}......` : url });
      assert.equal(refused.status, 400, url);
    }
    const added = await mutate('/api/workers', { url: worker.url, token: worker.token, id: 'wa' });
    assert.equal(added.status, 201);
    const json = await body<Record<string, unknown>>(added);
    assert.equal(json['state'], 'up');
    assert.equal(json['capacity'], 4);
    assert.equal(json['has_token'], true);
    assert.ok(!JSON.stringify(json).includes(worker.token));
    assert.equal((await mutate('/api/workers', { url: worker.url, token: worker.token, id: 'wa' })).status, 409);
    const down = await mutate('/api/workers', { url: 'http://127.0.0.1:9', id: 'gone' });
    assert.equal((await body<{ state: string }>(down)).state, 'down');
    assert.equal((await mutate('/api/workers/gone', undefined, 'DELETE')).status, 204);
    assert.equal((await mutate('/api/workers/gone', undefined, 'DELETE')).status, 404);
  });

  test('a workshop: its seats are made in parallel on the worker and become ready', async () => {
    const bad = [
      { name: 'x', seats: 1 },
      { name: 'x', seats: -1, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
      { name: 'x', seats: 1, ends_at: 'tomorrow' },
      { name: 'x', seats: 1, ends_at: new Date(Date.now() - 1000).toISOString() },
      { name: 'x', seats: 3, max_seats: 2, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
      { name: 'x', seats: 9, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
    ];
    for (const payload of bad) {
      const refused = await mutate('/api/workshops', payload);
      assert.ok([400, 503].includes(refused.status), `${JSON.stringify(payload)} -> ${refused.status}`);
    }
    assert.deepEqual(
      (await body<{ workshops: unknown[] }>(await teacher.fetch('/api/workshops'))).workshops,
      [],
      'nothing made by refusals',
    );
    const created = await mutate('/api/workshops', {
      name: 'Intro to shells',
      seats: 2,
      max_seats: 3,
      memory_mb: 128,
      ends_at: new Date(Date.now() + 3_600_000).toISOString(),
    });
    assert.equal(created.status, 201);
    const w = await body<{ id: string; join_code: string }>(created);
    workshopId = w.id;
    joinCode = w.join_code;
    assert.match(joinCode, /^[A-HJ-NP-Z2-9]{8}$/);
    await server.service.settled();
    const shown = await body<{ seats: { seat_id: number; state: string; worker_id: string }[] }>(
      await teacher.fetch(`/api/workshops/${workshopId}`),
    );
    assert.deepEqual(
      shown.seats.map((s) => [s.seat_id, s.state, s.worker_id]),
      [
        [1, 'ready', 'wa'],
        [2, 'ready', 'wa'],
      ],
    );
    assert.equal(worker.api.manager.list(workshopId).length, 2);
    const other = new Browser(server.url);
    await other.json('/api/login', { email: 'other@example.org', password: PASSWORD });
    assert.equal((await other.fetch(`/api/workshops/${workshopId}`)).status, 404, "another instructor's workshop is not found");
    assert.equal((await teacher.fetch('/api/workshops/ws-aaaaaaaaaa')).status, 404);
    assert.equal((await teacher.fetch('/api/workshops/not-an-id')).status, 400);
    assert.equal((await teacher.fetch(`/api/workshops/${workshopId}/seats/x/console`)).status, 400);
  });

  test('join: bad input and wrong codes refused; a seat at once with a cookie; the same cookie or the rejoin token give the same seat', async () => {
    const stranger = new Browser(server.url);
    for (const [payload, status] of [
      [{ code: 'AAAAAAAA', name: 'Ann' }, 404],
      [{ code: 'short', name: 'Ann' }, 404],
      [{ code: joinCode }, 400],
      [{ code: joinCode, name: '   ' }, 400],
      [{ code: 5, name: 'Ann' }, 400],
      [{ code: joinCode, name: 'Ann', seat: 1 }, 400],
    ] as const) {
      assert.equal((await stranger.json('/api/join', payload)).status, status, JSON.stringify(payload));
    }
    assert.equal((await stranger.fetch('/api/join', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' })).status, 415);
    assert.equal(stranger.cookies.size, 0);
    const joined = await learner.json('/api/join', { code: joinCode.toLowerCase(), name: 'Ann' });
    assert.equal(joined.status, 201);
    const answer = await body<JoinAnswer>(joined);
    learnerSeat = answer.seat.seat_id;
    assert.equal(learnerSeat, 1);
    assert.equal(answer.seat.state, 'ready', 'a made seat, at once');
    assert.equal(answer.workspace_url, `/w/${workshopId}/1/`);
    assert.ok(learner.cookies.has('ct_learner'));
    const again = await learner.json('/api/join', { code: joinCode, name: 'Ann again' });
    assert.equal(again.status, 200);
    assert.equal((await body<JoinAnswer>(again)).seat.seat_id, 1);
    const elsewhere = new Browser(server.url);
    const rejoined = await elsewhere.json('/api/rejoin', { token: answer.rejoin_token });
    assert.equal((await body<JoinAnswer>(rejoined)).seat.seat_id, 1);
    assert.equal((await body<JoinAnswer>(await elsewhere.fetch('/api/me'))).seat.seat_id, 1);
    assert.equal((await elsewhere.json('/api/rejoin', { token: 'forged' })).status, 404);
    const forged = new Browser(server.url);
    forged.cookies.set('ct_learner', 'forged-learner-token');
    const me = await forged.fetch('/api/me');
    assert.equal(me.status, 401);
    assert.equal(forged.cookies.size, 0, 'the forged cookie is cleared');
    const seats = await body<{ seats: { learner: { name: string } | null }[] }>(await teacher.fetch(`/api/workshops/${workshopId}/seats`));
    assert.deepEqual(
      seats.seats.map((s) => s.learner?.name ?? null),
      ['Ann', null],
    );
  });

  test("the workspace through the server: page, files and terminal; only the seat's learner or instructor; the worker token stays inside", async () => {
    const page = await learner.fetch(`/w/${workshopId}/1/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /learner page/);
    assert.equal((await learner.fetch(`/w/${workshopId}/1/assets/app.js`)).status, 200);
    const redirect = await learner.fetch(`/w/${workshopId}/1`);
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get('location'), '1/');
    assert.equal((await new Browser(server.url).fetch(`/w/${workshopId}/1/`)).status, 401, 'no cookie');
    const bob = new Browser(server.url);
    const bobJoin = await body<JoinAnswer>(await bob.json('/api/join', { code: joinCode, name: 'Bob' }));
    assert.equal(bobJoin.seat.seat_id, 2);
    assert.equal((await bob.fetch(`/w/${workshopId}/1/`)).status, 403, "another learner's seat");
    assert.equal((await bob.fetch(`/proxy/${workshopId}/1/files/`)).status, 403);

    const put = await learner.fetch(`/proxy/${workshopId}/1/files/hello.txt`, { method: 'PUT', body: 'hi from the server' });
    assert.ok(put.status < 300, `PUT ${put.status}`);
    assert.equal(readFileSync(join(workspace, 'hello.txt'), 'utf8'), 'hi from the server');
    const got = await learner.fetch(`/proxy/${workshopId}/1/files/hello.txt`);
    assert.equal(await got.text(), 'hi from the server');
    const escape = await learner.fetch(`/proxy/${workshopId}/1/files/..%2f..%2fetc/passwd`);
    assert.ok([400, 403].includes(escape.status), `a path out of the workspace is refused (${escape.status}: ${await escape.text()})`);
    assert.equal((await teacher.fetch(`/proxy/${workshopId}/1/files/hello.txt`)).status, 200, 'the instructor may look in');
    // A URL parser reads `\` as `/` and resolves the dot segments: the path sent on to the worker
    // (with the worker's token) must still be this seat's, whatever the browser's raw path says.
    const raw = (method: string, path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const { hostname, port } = new URL(server.url);
        const sent = httpRequest({ hostname, port, method, path, headers: { cookie: learner.cookieHeader() } }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        });
        sent.on('error', reject);
        sent.end();
      });
    const up = '\\..'.repeat(4);
    for (const [method, path] of [
      ['POST', `/proxy/${workshopId}/1/a${up}\\vms/${workshopId}/2/token`],
      ['GET', `/proxy/${workshopId}/1/files${up}\\vms`],
      ['GET', `/w/${workshopId}/1/a${up}\\vms`],
      ['GET', `/proxy/${workshopId}/1/files/%2e%2e\\%2e%2e\\%2e%2e\\%2e%2e\\vms`],
    ] as const) {
      const answer = await raw(method, path);
      assert.equal(answer.status, 400, `${method} ${path}: ${answer.status} ${answer.body}`);
      assert.doesNotMatch(answer.body, /"token"|"vms"/);
    }

    const wsUrl = `${server.url.replace('http', 'ws')}/proxy/${workshopId}/1/terminal`;
    const terminal = TerminalClient.connect(wsUrl, { headers: { cookie: learner.cookieHeader() } });
    await terminal.opened;
    assert.equal((await terminal.run('echo through-the-server-$((6*7))')).trim(), 'through-the-server-42');
    const connected = await body<{ seats: { state: string }[] }>(await teacher.fetch(`/api/workshops/${workshopId}/seats`));
    assert.equal(connected.seats[0]?.state, 'connected');
    terminal.ws.close();
    await terminal.closed;
    const refused = TerminalClient.connect(wsUrl, { headers: { cookie: bob.cookieHeader() } });
    await assert.rejects(refused.opened, /HTTP 403/);
    const crossSite = TerminalClient.connect(wsUrl, { headers: { cookie: learner.cookieHeader(), origin: 'https://evil.example' } });
    await assert.rejects(crossSite.opened, /HTTP 403/);
    const audit = readFileSync(worker.api.auditPath, 'utf8');
    assert.ok(!audit.includes('ct_learner'), 'no learner cookie reached the worker');
  });

  test('instructor: console, workspace link (audited), reset, add seats', async () => {
    const console = await teacher.fetch(`/api/workshops/${workshopId}/seats/1/console`);
    assert.equal(console.status, 200);
    const link = await body<{ workspace_url: string; learner: string }>(
      await mutate(`/api/workshops/${workshopId}/seats/1/workspace-url`, {}),
    );
    assert.deepEqual(link, { workspace_url: `/w/${workshopId}/1/`, learner: 'Ann' });
    const audit = await body<{ entries: { action: string; actor: string }[] }>(await teacher.fetch(`/api/workshops/${workshopId}/audit`));
    assert.ok(audit.entries.some((e) => e.action === 'seat.workspace_url' && e.actor === 'instructor:teacher@example.org'));
    assert.equal((await mutate(`/api/workshops/${workshopId}/seats/9/reset`, {})).status, 404);
    const before = worker.api.manager.get(workshopId, 1).createdAt;
    const reset = await mutate(`/api/workshops/${workshopId}/seats/1/reset`, {});
    assert.equal(reset.status, 202);
    assert.equal((await body<{ state: string }>(reset)).state, 'provisioning');
    await server.service.settled();
    assert.notEqual(worker.api.manager.get(workshopId, 1).createdAt, before, 'a fresh VM');
    assert.equal((await body<JoinAnswer>(await learner.fetch('/api/me'))).seat.seat_id, 1, 'the learner keeps the seat');
    assert.equal((await mutate(`/api/workshops/${workshopId}/seats`, { count: 0 })).status, 400);
    const added = await mutate(`/api/workshops/${workshopId}/seats`, { count: 1 });
    assert.equal(added.status, 201);
    await server.service.settled();
    assert.equal(worker.api.manager.list(workshopId).length, 3);
  });

  test('end: every VM removed from the worker; joins and the workspace refused after', async () => {
    const ended = await mutate(`/api/workshops/${workshopId}/end`, {});
    assert.equal(ended.status, 200);
    assert.equal((await body<{ removed: number }>(ended)).removed, 3, 'seats 1, 2 and the added 3');
    assert.equal(worker.api.manager.list(workshopId).length, 0);
    assert.equal((await new Browser(server.url).json('/api/join', { code: joinCode, name: 'Late' })).status, 410);
    assert.equal((await learner.fetch(`/w/${workshopId}/1/`)).status, 410);
    const again = await mutate(`/api/workshops/${workshopId}/end`, {});
    assert.equal((await body<{ removed: number }>(again)).removed, 0, 'ending twice does nothing more');
  });

  test('the OpenAPI document, metrics and request ids', async () => {
    const doc = await body<{ paths: Record<string, unknown> }>(await teacher.fetch('/openapi.json'));
    for (const path of [
      '/api/join',
      '/api/workshops',
      '/api/workshops/{workshopID}/seats/{seatID}/reset',
      '/proxy/{workshopID}/{seatID}/terminal',
    ]) {
      assert.ok(path in doc.paths, path);
    }
    const metrics = await (await teacher.fetch('/metrics')).text();
    assert.ok(/clarateach_server_joins_total\{result="new"\} 2/.test(metrics), 'joins counted');
    assert.ok(/clarateach_server_workers\{state="up"\} 1/.test(metrics), 'workers by state');
    const withId = await teacher.fetch('/health', { headers: { 'x-request-id': 'abc-123' } });
    assert.equal(withId.headers.get('x-request-id'), 'abc-123');
    assert.equal((await teacher.fetch('/nope')).status, 404);
  });

  test('joins are rate-limited per client', async () => {
    const limited = await start({ JOIN_RATE_LIMIT: '3' });
    try {
      const browser = new Browser(limited.url);
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await browser.json('/api/join', { code: 'AAAAAAAA', name: 'x' })).status);
      assert.deepEqual(statuses, [404, 404, 404, 429]);
      const refused = await browser.json('/api/join', { code: 'AAAAAAAA', name: 'x' });
      assert.equal((await body<{ code: string }>(refused)).code, 'rate_limited');
    } finally {
      await limited.stop();
    }
  });
});
