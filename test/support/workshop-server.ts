// For the workshop server's tests: real in-process agents as workers (test/support/api.ts: the
// real agent app and lifecycle, stand-in VMM, loopback addresses), a browser-like HTTP client with
// a cookie jar, and a real PostgreSQL cluster in a temp directory run as the `postgres` user.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestApi, type TestApi } from './api.ts';

export interface TestWorker {
  readonly url: string;
  readonly token: string;
  readonly api: TestApi;
  /** The loopback /24 its seats' addresses are in (seat N at .10+N). */
  readonly subnet: string;
}

/** A minimal learner page build (the agent serves index.html and assets/ of it). */
export function fakePageDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ct-page-'));
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><title>learner page</title><script src="assets/app.js"></script>');
  writeFileSync(join(dir, 'assets', 'app.js'), 'console.log("learner page")');
  return dir;
}

let subnetCounter = 0;

/** A real agent (in this process) listening on loopback, with a bearer token. */
export async function startTestWorker(o: { capacity: number; workerId: string; pageDir?: string }): Promise<TestWorker> {
  const token = `worker-token-${o.workerId}`;
  const subnet = `127.${100 + (process.pid % 100)}.${(++subnetCounter * 7 + (process.pid % 7)) % 250}`;
  const api = await buildTestApi({
    agentToken: token,
    capacity: o.capacity,
    workerId: o.workerId,
    cidr: `${subnet}.1/24`,
    guestAnswers: true,
    ...(o.pageDir === undefined ? {} : { pageDir: o.pageDir }),
  });
  const url = await api.app.listen({ host: '127.0.0.1', port: 0 });
  return { url, token, api, subnet };
}

/** A worker's agent that accepts connections and answers nothing (a hung agent) until told to. */
export interface SilentAgent {
  readonly url: string;
  /** What it was asked, in order: `GET /health`. */
  readonly requests: string[];
  /** Resolves once `count` requests have arrived. */
  arrived(count: number): Promise<void>;
  /** Every request held so far, and each one after, gets this status with `{error, code}`. */
  answer(status: number, code: string): void;
  close(): Promise<void>;
}

/** A stand-in agent on loopback: it takes each request and holds it without a word. */
export async function startSilentAgent(): Promise<SilentAgent> {
  const requests: string[] = [];
  const held: ServerResponse[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  let answer: { status: number; code: string } | undefined;
  const send = (response: ServerResponse): void => {
    if (!answer) return;
    response.writeHead(answer.status, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ error: `stand-in agent answers ${answer.code}`, code: answer.code }));
  };
  const server = createHttpServer((request: IncomingMessage, response: ServerResponse) => {
    requests.push(`${request.method} ${request.url}`);
    for (const waiter of waiters.filter((w) => requests.length >= w.count)) waiter.resolve();
    request.resume();
    if (answer) send(response);
    else held.push(response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('the stand-in agent has no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    arrived: (count) =>
      requests.length >= count ? Promise.resolve() : new Promise((resolve) => waiters.push({ count, resolve: () => resolve() })),
    answer(status, code) {
      answer = { status, code };
      for (const response of held.splice(0)) send(response);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** fetch with a cookie jar (as a browser keeps cookies for one site). */
export class Browser {
  readonly cookies = new Map<string, string>();

  constructor(readonly base: string) {}

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size > 0) headers.set('cookie', this.cookieHeader());
    const response = await fetch(`${this.base}${path}`, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    return response;
  }

  json(path: string, body: unknown, headers: Record<string, string> = {}, method = 'POST'): Promise<Response> {
    return this.fetch(path, { method, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

const PG_BIN = '/usr/lib/postgresql/15/bin';

export function postgresAvailable(): boolean {
  return process.getuid?.() === 0 && spawnSync(join(PG_BIN, 'initdb'), ['--version']).status === 0;
}

export interface TestPostgres {
  readonly url: string;
  stop(): Promise<void>;
}

function asPostgres(args: string[]): void {
  const result = spawnSync('runuser', ['-u', 'postgres', '--', ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
}

/** A fresh PostgreSQL 15 cluster in a temp dir, on 127.0.0.1 at a free port, run as `postgres` (not root). */
export async function startPostgres(): Promise<TestPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-pg-'));
  chmodSync(dir, 0o755);
  const data = join(dir, 'data');
  mkdirSync(data);
  spawnSync('chown', ['-R', 'postgres:postgres', dir]);
  asPostgres([join(PG_BIN, 'initdb'), '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  const port = await freePort();
  asPostgres([
    join(PG_BIN, 'pg_ctl'),
    '-D',
    data,
    '-l',
    join(dir, 'server.log'),
    '-w',
    '-o',
    `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c max_connections=100 -c fsync=off`,
    'start',
  ]);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await new Promise<void>((resolve) => {
        const stop = spawn('runuser', ['-u', 'postgres', '--', join(PG_BIN, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
        stop.on('close', () => resolve());
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface JoinedSeat {
  readonly status: number;
  readonly seatId: number | undefined;
  readonly via: string;
}

/** `count` learners join at once, spread round-robin over `serverUrls` (each its own browser). */
export async function joinStorm(serverUrls: readonly string[], code: string, count: number): Promise<JoinedSeat[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const via = serverUrls[i % serverUrls.length] ?? '';
      const response = await new Browser(via).json('/api/join', { code, name: `learner ${i + 1}` });
      const answer = (await response.json()) as { seat?: { seat_id: number } };
      return { status: response.status, seatId: answer.seat?.seat_id, via };
    }),
  );
}

/** Polls `check` until it is true or `timeoutMs` passed. */
export async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
