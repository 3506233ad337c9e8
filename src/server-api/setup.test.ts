// The first instructor on a fresh server (embedded database, in-process): the sign-up URL in the
// log, its code making exactly one account (also under 10 sign-ups at once) that is logged in and
// can create a workshop; wrong codes, second sign-ups and bad bodies refused with nothing changed;
// codes of several starts all valid until the first account; `clarateach instructor add` ends it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { setupLine, startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';
import { Browser } from '../../test/support/workshop-server.ts';

const BIN = new URL('../../bin/clarateach.js', import.meta.url).pathname;
const PASSWORD = 'a-long-enough-password';
/** The operator's line, whatever URL is in it. */
const SETUP_LINE = new RegExp(
  `^${setupLine('URL')
    .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    .replace('URL', '(\\S+)')}$`,
);

interface Started {
  readonly server: RunningServer;
  /** The sign-up URL of the log line, if one was logged. */
  readonly setupUrl: string | undefined;
  /** What went to the operator as plain text. */
  readonly notices: string;
}

interface Counts {
  instructors: number;
  sessions: number;
  codes: number;
  audit: number;
  workshops: number;
}

async function counts(server: RunningServer): Promise<Counts> {
  const rows = await server.db.query<Counts>(
    `SELECT (SELECT count(*)::int FROM instructors) AS instructors, (SELECT count(*)::int FROM sessions) AS sessions,
       (SELECT count(*)::int FROM setup_codes) AS codes, (SELECT count(*)::int FROM audit) AS audit,
       (SELECT count(*)::int FROM workshops) AS workshops`,
  );
  return rows[0] as Counts;
}

async function body<T>(response: Response): Promise<T> {
  return (await response.json()) as T;
}

function codeOf(url: string | undefined): string {
  const code = url === undefined ? null : new URL(url).searchParams.get('setup');
  assert.ok(code, `a setup code in ${url}`);
  return code;
}

describe('the first instructor signs up with the setup code', { timeout: 180_000 }, () => {
  let dir: string;
  const running: RunningServer[] = [];

  /** A server on `dataDir` whose JSON log lines are read back as an operator would read them. */
  const start = async (dataDir: string, extra: Record<string, string> = {}): Promise<Started> => {
    const lines: string[] = [];
    let notices = '';
    const server = await startServer(loadServerConfig({ DATA_DIR: join(dir, dataDir), PORT: '0', JOIN_RATE_LIMIT: '1000', ...extra }), {
      log: pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) }),
      noBackground: true,
      notices: (text) => void (notices += text),
    });
    running.push(server);
    const messages = lines.map((line) => (JSON.parse(line) as { msg: string }).msg);
    const setupUrl = messages.map((m) => SETUP_LINE.exec(m)?.[1]).find((url) => url !== undefined);
    return { server, setupUrl, notices };
  };
  const stop = async (server: RunningServer): Promise<void> => {
    running.splice(running.indexOf(server), 1);
    await server.stop();
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ct-setup-'));
  });
  after(async () => {
    for (const server of running) await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the log names the sign-up URL; its code makes the first account, logged in, who creates a workshop', async () => {
    const { server, setupUrl, notices } = await start('first');
    assert.ok(setupUrl, 'the setup line is logged');
    assert.ok(setupUrl.startsWith(`${server.url}/?setup=`), setupUrl);
    assert.match(notices, new RegExp(`\\n  ${setupUrl.replace(/[?]/g, '\\?')}\\n`), 'and said in plain words');
    const code = codeOf(setupUrl);
    assert.ok(code.length >= 40, 'unguessable');
    const stored = await server.db.query<{ code_digest: string }>('SELECT code_digest FROM setup_codes');
    assert.equal(stored.length, 1);
    assert.notEqual(stored[0]?.code_digest, code, 'only its digest is kept');

    const teacher = new Browser(server.url);
    assert.deepEqual(await body(await teacher.fetch('/api/setup')), { needed: true });
    const doc = await body<{ paths: Record<string, Record<string, unknown>> }>(await teacher.fetch('/openapi.json'));
    assert.deepEqual(Object.keys(doc.paths['/api/setup'] ?? {}).sort(), ['get', 'post']);

    const before = await counts(server);
    assert.deepEqual(before, { instructors: 0, sessions: 0, codes: 1, audit: 0, workshops: 0 });
    const wrong = await teacher.json('/api/setup', { setup_code: `${code.slice(0, -1)}x`, email: 't@example.org', password: PASSWORD });
    assert.equal(wrong.status, 401);
    assert.equal((await body<{ code: string }>(wrong)).code, 'invalid_setup_code');
    assert.deepEqual(await counts(server), before, 'a wrong code changes nothing');
    assert.equal(teacher.cookies.size, 0);

    const ok = await teacher.json('/api/setup', { setup_code: code, email: 'Teacher@Example.org', password: PASSWORD });
    assert.equal(ok.status, 201);
    const setCookie = ok.headers.getSetCookie().join('\n');
    assert.match(setCookie, /ct_session=[\w-]+;.*HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    const session = await body<{ email: string; csrf_token: string; session_token?: string }>(ok);
    assert.equal(session.email, 'teacher@example.org');
    assert.equal(session.session_token, undefined, 'the token is only in the cookie');
    assert.equal((await teacher.fetch('/api/session')).status, 200);
    const created = await teacher.json(
      '/api/workshops',
      { name: 'first', seats: 0, max_seats: 5, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
      { 'x-csrf-token': session.csrf_token },
    );
    assert.equal(created.status, 201, await created.clone().text());

    assert.deepEqual(await body(await teacher.fetch('/api/setup')), { needed: false });
    assert.deepEqual(await counts(server), { instructors: 1, sessions: 1, codes: 0, audit: 2, workshops: 1 });
    const audit = await server.db.query<{ actor: string; action: string; target: string }>(
      `SELECT actor, action, target FROM audit WHERE action = 'instructor.signup'`,
    );
    assert.deepEqual(audit, [{ actor: 'instructor:teacher@example.org', action: 'instructor.signup', target: 'teacher@example.org' }]);

    const after = await counts(server);
    const other = new Browser(server.url);
    for (const setupCode of [code, 'any-other-code']) {
      const again = await other.json('/api/setup', { setup_code: setupCode, email: 'mallory@example.org', password: PASSWORD });
      assert.equal(again.status, 409);
      assert.equal((await body<{ code: string }>(again)).code, 'already_set_up');
    }
    assert.equal(other.cookies.size, 0);
    assert.deepEqual(await counts(server), after, 'a second sign-up changes nothing');
    assert.equal((await other.json('/api/login', { email: 'teacher@example.org', password: PASSWORD })).status, 200);
  });

  test('bad bodies are refused with 400 and change nothing', async () => {
    const { server, setupUrl } = await start('bodies');
    const code = codeOf(setupUrl);
    const browser = new Browser(server.url);
    const before = await counts(server);
    const good = { setup_code: code, email: 't@example.org', password: PASSWORD };
    const bad: Record<string, unknown>[] = [
      { email: good.email, password: good.password },
      { setup_code: code, password: good.password },
      { setup_code: code, email: good.email },
      { ...good, setup_code: '' },
      { ...good, password: 'short' },
      { ...good, email: 'not-an-email' },
      { ...good, email: 'two words@example.org' },
      { ...good, admin: true },
      { ...good, setup_code: 42 },
    ];
    for (const payload of bad) {
      const refused = await browser.json('/api/setup', payload);
      assert.equal(refused.status, 400, JSON.stringify(payload));
      assert.equal(typeof (await body<{ error: string }>(refused)).error, 'string');
    }
    const malformed = await browser.fetch('/api/setup', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":' });
    assert.equal(malformed.status, 400);
    const form = await browser.fetch('/api/setup', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `setup_code=${code}&email=t%40example.org&password=${PASSWORD}`,
    });
    assert.equal(form.status, 415, "another site's form cannot sign up");
    assert.deepEqual(await counts(server), before);
    assert.equal(browser.cookies.size, 0);
    assert.deepEqual(await body(await browser.fetch('/api/setup')), { needed: true });
  });

  test('10 sign-ups at once with the right code make exactly one account; the others get 409', async () => {
    const { server, setupUrl } = await start('race');
    const code = codeOf(setupUrl);
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        new Browser(server.url).json('/api/setup', { setup_code: code, email: `t${i}@example.org`, password: PASSWORD }),
      ),
    );
    const statuses = answers.map((a) => a.status).sort();
    assert.deepEqual(statuses, [201, ...Array<number>(9).fill(409)]);
    for (const answer of answers.filter((a) => a.status === 409))
      assert.equal((await body<{ code: string }>(answer)).code, 'already_set_up');
    const c = await counts(server);
    assert.equal(c.instructors, 1);
    assert.equal(c.sessions, 1);
    assert.equal(c.codes, 0);
  });

  test('sign-ups are rate limited like logins', async () => {
    const { server } = await start('limited', { JOIN_RATE_LIMIT: '1' });
    const browser = new Browser(server.url);
    const statuses: number[] = [];
    for (let i = 0; i < 11; i++)
      statuses.push((await browser.json('/api/setup', { setup_code: `guess-${i}`, email: 't@example.org', password: PASSWORD })).status);
    assert.deepEqual(statuses, [...Array<number>(10).fill(401), 429]);
    assert.equal((await counts(server)).instructors, 0);
  });

  test('each start adds its own code and all work until the first account; then none', async () => {
    const first = await start('restarts');
    const oldCode = codeOf(first.setupUrl);
    await stop(first.server);
    const second = await start('restarts');
    const newCode = codeOf(second.setupUrl);
    assert.notEqual(newCode, oldCode);
    assert.equal((await counts(second.server)).codes, 2);
    const ok = await new Browser(second.server.url).json('/api/setup', { setup_code: oldCode, email: 't@example.org', password: PASSWORD });
    assert.equal(ok.status, 201);
    assert.equal((await counts(second.server)).codes, 0);
    await stop(second.server);
    const third = await start('restarts');
    assert.equal(third.setupUrl, undefined, 'no code once an instructor exists');
    assert.equal(third.notices, '');
    assert.equal((await counts(third.server)).codes, 0);
  });

  test('after `clarateach instructor add` setup is no longer needed and the logged code no longer works', async () => {
    const first = await start('cli');
    const code = codeOf(first.setupUrl);
    await stop(first.server);
    // The embedded database is one process's at a time: the command runs while the server is stopped.
    const added = spawnSync(process.execPath, [BIN, 'instructor', 'add', 'ops@example.org', '--data-dir', join(dir, 'cli')], {
      input: `${PASSWORD}\n`,
      encoding: 'utf8',
    });
    assert.equal(added.status, 0, added.stderr);
    const again = await start('cli');
    assert.equal(again.setupUrl, undefined);
    assert.deepEqual(await counts(again.server), { instructors: 1, sessions: 0, codes: 0, audit: 0, workshops: 0 });
    const browser = new Browser(again.server.url);
    assert.deepEqual(await body(await browser.fetch('/api/setup')), { needed: false });
    const refused = await browser.json('/api/setup', { setup_code: code, email: 'mallory@example.org', password: PASSWORD });
    assert.equal(refused.status, 409);
    assert.equal((await counts(again.server)).instructors, 1);
  });
});
