// Two workshop server processes (the real `clarateach server`) sharing one real PostgreSQL 15
// (a fresh cluster in a temp dir, run as the `postgres` user): both migrate at once, each logs its
// own sign-up code and sign-ups racing on both with them make exactly one account, a session made
// on one works on the other, and 20 concurrent joins spread over both end with 20 distinct seats,
// none twice, no worker over capacity. Workers are two real in-process agents (stand-in VMM,
// loopback addresses) of 10 seats each. Ending on one process removes every VM on both workers.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { setupLine } from '../../src/cli/server.ts';
import { MIGRATIONS } from '../../src/server-db/migrations.ts';
import {
  Browser,
  eventually,
  freePort,
  joinStorm,
  postgresAvailable,
  startPostgres,
  startTestWorker,
  type TestPostgres,
  type TestWorker,
} from '../support/workshop-server.ts';

const BIN = new URL('../../bin/clarateach.js', import.meta.url).pathname;
const PASSWORD = 'a-long-enough-password';

let postgres: TestPostgres;
let dir: string;
const servers: { url: string; child: ChildProcess; log: string }[] = [];
const workers: TestWorker[] = [];

function run(args: string[], env: Record<string, string>, stdin: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, out }));
    child.stdin.end(stdin);
  });
}

async function startServerProcess(databaseUrl: string, name: string): Promise<{ url: string; child: ChildProcess; log: string }> {
  const port = await freePort();
  const log = join(dir, `${name}.log`);
  const child = spawn(process.execPath, [BIN, 'server'], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: String(port),
      HOST: '127.0.0.1',
      JOIN_RATE_LIMIT: '1000',
      WORKER_POLL_S: '1',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = createWriteStream(log);
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  return { url: `http://127.0.0.1:${port}`, child, log };
}

/** The setup code of the sign-up line in a server's log (its JSON line, as an operator reads it). */
async function setupCodeIn(log: string): Promise<string> {
  const [head = '', tail = ''] = setupLine('\n').split('\n');
  let url = '';
  await eventually(`the sign-up line in ${log}`, async () => {
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      const msg = (JSON.parse(line) as { msg?: string }).msg ?? '';
      if (msg.startsWith(head) && msg.endsWith(tail)) url = msg.slice(head.length, msg.length - tail.length);
    }
    return url !== '';
  });
  return new URL(url).searchParams.get('setup') ?? '';
}

before(async () => {
  if (!postgresAvailable()) return;
  dir = mkdtempSync(join(tmpdir(), 'ct-pg-servers-'));
  postgres = await startPostgres();
  for (const id of ['wa', 'wb']) workers.push(await startTestWorker({ capacity: 10, workerId: id }));
  // Both processes start (and migrate) at the same moment.
  servers.push(...(await Promise.all([startServerProcess(postgres.url, 'a'), startServerProcess(postgres.url, 'b')])));
  for (const s of servers) {
    await eventually(
      `server ${s.url}`,
      async () => {
        if (s.child.exitCode !== null) throw new Error(`server exited:\n${readFileSync(s.log, 'utf8')}`);
        return fetch(`${s.url}/health`).then(
          (r) => r.ok,
          () => false,
        );
      },
      60_000,
    );
  }
});
after(async () => {
  for (const s of servers) {
    if (s.child.exitCode === null) {
      const exited = new Promise((resolve) => s.child.once('exit', resolve));
      s.child.kill('SIGTERM');
      await exited;
    }
  }
  for (const w of workers) await w.api.close();
  await postgres?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test(
  'two server processes on one PostgreSQL: racing sign-ups make one account; 20 concurrent joins, 20 distinct seats, no worker over capacity',
  { timeout: 240_000 },
  async (t) => {
    if (!postgresAvailable()) return t.skip('needs root and PostgreSQL 15 (scripts/install-deps.sh installs it)');
    const [a, b] = servers;
    assert.ok(a && b);
    const migrations = new pg.Client({ connectionString: postgres.url });
    await migrations.connect();
    const applied = await migrations.query('SELECT version FROM schema_migrations ORDER BY version');
    await migrations.end();
    assert.deepEqual(
      applied.rows.map((r: { version: number }) => r.version),
      MIGRATIONS.map((_, i) => i + 1),
      'every migration applied, once, although two processes started together',
    );

    // The first account: each process logged its own code; 10 sign-ups race over both, one wins.
    const codes = await Promise.all([setupCodeIn(a.log), setupCodeIn(b.log)]);
    assert.notEqual(codes[0], codes[1]);
    const signUps = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        new Browser(i % 2 === 0 ? a.url : b.url).json('/api/setup', {
          setup_code: codes[i % 2],
          email: 'teacher@example.org',
          password: PASSWORD,
        }),
      ),
    );
    assert.deepEqual(signUps.map((r) => r.status).sort(), [201, ...Array<number>(9).fill(409)]);
    const added = await run(['instructor', 'add', 'second@example.org'], { DATABASE_URL: postgres.url }, `${PASSWORD}\n`);
    assert.equal(added.code, 0, added.out);
    for (const s of [a, b]) assert.deepEqual(await (await fetch(`${s.url}/api/setup`)).json(), { needed: false });
    const login = await new Browser(a.url).json('/api/login', { email: 'teacher@example.org', password: PASSWORD, bearer: true });
    assert.equal(login.status, 200);
    const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
    const onA = new Browser(a.url);
    const onB = new Browser(b.url);
    for (const w of workers) assert.equal((await onA.json('/api/workers', { url: w.url, token: w.token }, auth)).status, 201);
    const listed = (await (await onB.fetch('/api/workers', { headers: auth })).json()) as { workers: { state: string }[] };
    assert.deepEqual(
      listed.workers.map((w) => w.state),
      ['up', 'up'],
      'the session and the workers are seen by the other process',
    );

    const created = await onB.json(
      '/api/workshops',
      { name: 'shared', seats: 5, max_seats: 20, memory_mb: 128, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
      auth,
    );
    assert.equal(created.status, 201);
    const workshop = (await created.json()) as { id: string; join_code: string };

    const joins = await joinStorm([a.url, b.url], workshop.join_code, 20);
    assert.deepEqual(
      joins.map((j) => j.status),
      Array(20).fill(201),
      JSON.stringify(joins),
    );
    assert.deepEqual(
      joins.map((j) => j.seatId ?? 0).sort((x, y) => x - y),
      Array.from({ length: 20 }, (_, i) => i + 1),
      'each seat once',
    );
    assert.equal(new Set(joins.map((j) => j.via)).size, 2, 'both processes took joins');
    assert.equal((await onA.json('/api/join', { code: workshop.join_code, name: 'one too many' })).status, 409);

    await eventually(
      'every seat ready',
      async () => {
        const shown = (await (await onA.fetch(`/api/workshops/${workshop.id}`, { headers: auth })).json()) as {
          seats: { state: string }[];
        };
        if (shown.seats.some((s) => s.state === 'failed')) throw new Error(`a seat failed: ${JSON.stringify(shown.seats)}`);
        return shown.seats.length === 20 && shown.seats.every((s) => s.state === 'ready');
      },
      120_000,
    );
    for (const w of workers) assert.equal(w.api.manager.list(workshop.id).length, 10, `${w.url} holds 10, not more`);

    const ended = await onA.json(`/api/workshops/${workshop.id}/end`, {}, auth);
    assert.equal(((await ended.json()) as { removed: number }).removed, 20);
    for (const w of workers) assert.equal(w.api.manager.list(workshop.id).length, 0);
    assert.equal((await onB.json('/api/join', { code: workshop.join_code, name: 'late' })).status, 410);
  },
);
